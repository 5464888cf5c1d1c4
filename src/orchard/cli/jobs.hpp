#pragma once
// The subcommands' work, callable from main() and from tests.
#include <cstdint>
#include <string>

namespace orchard::cli {

inline constexpr const char* kVersion = "orchard 0.1.0";

struct FeaturizeArgs {
  std::string input, output, model, glob = "*.jpg";
  int batch = 4, threads = 0, shard_size = 1000;
  std::int64_t limit = 0;
  bool quiet = false;
};

// `orchard featurize`: plans (or resumes) the manifest, embeds, writes OUTPUT/_featurize.json.
void run_featurize(const FeaturizeArgs& a);

// `orchard prepare-model`: builds, caches and makes default; prints the model path.
void run_prepare_model(const std::string& weights, const std::string& out);

}  // namespace orchard::cli
