#include "orchard/cli/jobs.hpp"

#include <arrow/util/config.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "orchard/dataset/manifest.hpp"
#include "orchard/error.hpp"
#include "orchard/featurize/featurize.hpp"
#include "orchard/model/model.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::cli {
namespace {
nlohmann::json versions() {
  return {{"orchard", kVersion}, {"libtorch", TORCH_VERSION}, {"arrow", ARROW_VERSION_STRING}};
}
}  // namespace

void run_featurize(const FeaturizeArgs& a) {
  const auto input = storage::open(a.input);
  const auto output = storage::open(a.output);
  const std::string model_pt = model::resolve(a.model);
  const auto manifest = dataset::plan(input, output, {a.input, a.glob, a.limit, a.shard_size});
  std::fprintf(stderr, "featurize: %zu images in %d shards, model %s\n", manifest.items.size(),
               manifest.num_shards(), model_pt.c_str());
  const auto s = featurize::run(manifest, input, output, model_pt, {a.batch, a.threads, !a.quiet});
  std::fprintf(stderr,
               "featurize: done: %lld embedded, %lld errors in %.1fs (%.1f images/s); %d of %d shards "
               "were already finished\n",
               static_cast<long long>(s.embedded), static_cast<long long>(s.failed), s.seconds,
               s.images_per_s, s.shards_skipped, s.shards);
  nlohmann::json j = {
      {"images", s.images}, {"embedded_this_run", s.embedded}, {"errors_this_run", s.failed},
      {"shards", s.shards}, {"shards_skipped", s.shards_skipped}, {"seconds", s.seconds},
      {"images_per_s", s.images_per_s}, {"model", model_pt}, {"versions", versions()},
      {"options", {{"input", a.input}, {"glob", a.glob}, {"batch", a.batch}, {"threads", a.threads},
                   {"limit", a.limit}, {"shard_size", a.shard_size}}}};
  storage::write_text(output.child("_featurize.json"), j.dump(2) + "\n");
}

void run_prepare_model(const std::string& weights, const std::string& out) {
  const std::string path = model::prepare(weights, out);
  if (out.empty()) {
    const std::string def = model::cache_dir() + "/default.pt";
    std::filesystem::copy_file(path, def + ".tmp", std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(def + ".tmp", def);
  }
  std::printf("%s\n", path.c_str());
}

}  // namespace orchard::cli
