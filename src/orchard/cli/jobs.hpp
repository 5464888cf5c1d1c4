#pragma once
// The subcommands' work, callable from main() and from tests.
#include <cstdint>
#include <string>
#include <vector>

#include "orchard/dataset/manifest.hpp"
#include "orchard/featurize/featurize.hpp"

namespace orchard::cli {

inline constexpr const char* kVersion = "orchard 0.1.0";

struct FeaturizeArgs {
  // Defaults are the stages' own, so they are stated once.
  std::string input, output, model, glob = dataset::PlanOptions{}.glob;
  int batch = featurize::Options{}.batch, threads = featurize::Options{}.threads;
  int io_depth = featurize::Options{}.io_depth;
  int shard_size = dataset::PlanOptions{}.shard_size;
  std::int64_t limit = 0;
  bool quiet = false;
  std::string classifier;  // classify: TRAINED, the OUTPUT holding pca/ and classifier/
  int top = featurize::Options{}.top;
};

// `orchard featurize`: plans (or resumes) the manifest, embeds, writes OUTPUT/_featurize.json.
void run_featurize(const FeaturizeArgs& a);

struct PcaArgs {
  std::string output, csv;
  double variance = 0.90;
  int k = 0;
  bool center = false;
};

// `orchard pca`: fits and projects; writes OUTPUT/_pca.json.
void run_pca(const PcaArgs& a);

// `orchard validate`: prints the counts, or every problem and throws orchard::Error.
void run_validate(const std::string& output);

// `orchard report`: writes OUTPUT/report/index.html.
void run_report(const std::string& output);

// `orchard classify`: featurize's shards with the classifier of a.classifier as their last step:
// OUTPUT/predictions/ (+ errors/), resumable; writes OUTPUT/_classify.json.
void run_classify(const FeaturizeArgs& a);

// `orchard train`: fits OUTPUT/classifier/ (classify/train.hpp), prints the holdout accuracy and
// rewrites OUTPUT/report/ with its classifier section.
void run_train(const std::string& output, const std::string& on, double holdout, std::uint64_t seed);

// `orchard run`: featurize, pca, validate, report, then OUTPUT/_SUCCESS (written last).
void run_all(const FeaturizeArgs& f, PcaArgs p);

// The steps of a distributed run (spark/orchard_spark.py), each the same stage code as `run`.
// Each prints one JSON object on stdout for the driver.

// `orchard plan`: lists INPUT and writes OUTPUT/_manifest.parquet (or checks the one there),
// recording the fingerprint of --model when given (a.model); with a.classifier, a classify OUTPUT
// (claimed for that classifier, finished = predictions parts);
// prints {"images", "shards", "finished": [shards whose features part exists], "input"}.
void run_plan(const FeaturizeArgs& a);

// `orchard featurize-shards OUTPUT --shards LIST`: featurizes those shards of the manifest in this
// process (the model loaded once), skipping finished ones (classifies them with a.classifier);
// prints the counts and timings.
void run_featurize_shards(const FeaturizeArgs& a, const std::string& shards);

// `orchard moments OUTPUT --shards LIST [--out FILE]`: PCA moments of those features parts, written
// to FILE or to OUTPUT/moments/part-FIRST.parquet; prints {"shards", "rows", "file", "part"}.
void run_moments(const std::string& output, const std::string& shards, const std::string& out, int threads);

// `orchard fit OUTPUT --moments FILE... | --moments-parts LIST`: merges the moments files (or
// OUTPUT/moments/part-N for N in LIST, deleted once the fit is saved), fits, writes OUTPUT/pca/.
void run_fit(const PcaArgs& a, const std::vector<std::string>& moments, const std::string& moments_parts);

// `orchard project OUTPUT --shards LIST`: projects those features parts with OUTPUT/pca/model.parquet.
void run_project(const std::string& output, const std::string& shards, int threads);

// `orchard commit OUTPUT [--info JSON]`: writes info's "featurize" and "pca" objects as
// _featurize.json and _pca.json, validates OUTPUT, writes the report, then _SUCCESS last (info's
// other keys, such as timings and options, merged into it); prints the counts.
void run_commit(const std::string& output, const std::string& info);

// `orchard prepare-model`: builds, caches and makes default; prints the model path.
void run_prepare_model(const std::string& weights, const std::string& out);

}  // namespace orchard::cli
