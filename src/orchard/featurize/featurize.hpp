#pragma once
// The per-shard pipeline: read bytes (many requests in flight) -> decode -> resize -> normalize ->
// batch -> infer -> one Parquet part of errors and one of features per shard, each published
// atomically; finished shards are skipped on a rerun (resume). The same Featurizer::run_shard
// serves `orchard featurize` (every shard, in process) and a Spark task (a list of shards). With a
// classifier head it is `orchard classify`: the same shard, whose last step writes predictions/.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "orchard/classify/head.hpp"
#include "orchard/dataset/manifest.hpp"
#include "orchard/model/model.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::featurize {

struct Options {
  int batch = 1;      // images per forward pass (measured best with OpenVINO on 2 cores: docs/benchmarks.md)
  int threads = 0;    // worker threads, each decoding and inferring its own batches; 0 = all cores
  int io_depth = 0;   // image reads in flight per shard; 0 = 32 on an object store, 4 on a local disk
  bool progress = true;  // a rate line on stderr when it is a terminal
  const classify::Head* head = nullptr;  // classify: write predictions/ (top `top` classes) instead of features/
  int top = 5;
  std::function<void()> before_writing;  // called once before the first shard is written (none: not called)
};

struct Summary {
  std::int64_t images = 0;        // in the shards asked for
  std::int64_t embedded = 0;      // rows written to features/ by this invocation
  std::int64_t failed = 0;        // rows written to errors/ by this invocation
  int shards = 0, shards_skipped = 0;  // skipped: already finished by an earlier run
  double seconds = 0;              // featurizing, after the model was loaded
  double model_seconds = 0;       // loading (and optimizing) the model
  double images_per_s = 0;        // over the shards this invocation processed
};

// Counts shared with a progress line.
struct Progress {
  std::atomic<std::int64_t> images{0}, errors{0};
};

// Holds the model (loaded once) and featurizes shards one at a time, each with every worker thread.
class Featurizer {
 public:
  Featurizer(const std::string& model_file, const Options& options);

  // Featurizes shard `shard` of the manifest: reads its images from input (io_depth reads ahead of
  // decoding, memory bounded), embeds them and publishes OUTPUT/errors/ then OUTPUT/features/
  // part-NNNNN (the features part marks the shard done), or predictions/ with a head. A bad image becomes an error row; a read
  // that still fails after retries, or a failed inference, throws and leaves the shard unpublished.
  void run_shard(const dataset::Manifest& manifest, const storage::Location& input,
                 const storage::Location& output, int shard, Progress& progress);

 private:
  std::unique_ptr<model::Embedder> embedder_;
  Options options_;
};

// The folder whose part marks a shard finished: predictions/ with a head, else features/.
storage::Location done_dir(const storage::Location& output, const Options& options);

// Runs the given shards of the manifest (all of them when empty), skipping those already finished,
// with the prepared model at model_file. Throws orchard::Error when the job cannot complete.
Summary run(const dataset::Manifest& manifest, const storage::Location& input, const storage::Location& output,
            const std::string& model_file, const Options& options, const std::vector<int>& shards = {});

}  // namespace orchard::featurize
