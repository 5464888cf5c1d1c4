#pragma once
// The per-shard pipeline: read bytes -> decode -> resize -> normalize -> batch -> infer -> one
// Parquet part of features and one of errors per shard, committed atomically; finished shards are
// skipped on a rerun (resume).
#include <cstdint>
#include <map>
#include <string>

#include "orchard/dataset/manifest.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::featurize {

struct Options {
  int batch = 2;      // images per forward pass (measured best on 2 cores: docs/benchmarks.md)
  int threads = 0;    // worker threads, each decoding and inferring its own batches; 0 = all cores
  bool progress = true;  // a rate line on stderr when it is a terminal
};

struct Summary {
  std::int64_t images = 0;        // in the manifest
  std::int64_t embedded = 0;      // rows written to features/ by this invocation
  std::int64_t failed = 0;        // rows written to errors/ by this invocation
  int shards = 0, shards_skipped = 0;  // skipped: already finished by an earlier run
  double seconds = 0;
  double images_per_s = 0;        // over the shards this invocation processed
};

// Runs every unfinished shard of the manifest (items read from input's filesystem) with the prepared model at model_pt, writing
// OUTPUT/features/ and OUTPUT/errors/. A bad input becomes an error row; anything that stops the
// job (unwritable OUTPUT, unloadable model) throws orchard::Error.
Summary run(const dataset::Manifest& manifest, const storage::Location& input,
            const storage::Location& output,
            const std::string& model_pt, const Options& options);

}  // namespace orchard::featurize
