#pragma once
// Inputs -> labelled items -> shards. The plan is frozen in OUTPUT/_manifest.parquet on the first
// run so that a rerun processes exactly the same shards (resume).
#include <cstdint>
#include <string>
#include <vector>

#include "orchard/storage/storage.hpp"

namespace orchard::dataset {

struct Item {
  std::string path;        // s3://bucket/key, or the absolute local path (Spark binaryFile's path)
  std::string label;       // the parent folder's name (the notebooks' element_at(split(path,'/'),-2))
  std::int64_t size = -1;  // bytes when listed (saves a HEAD per image on S3); -1 = unknown
};

struct PlanOptions {
  std::string input;          // INPUT as a URI with its scheme (s3://..., file:///...), keys redacted
  std::string glob = "*.jpg";
  std::int64_t limit = 0;     // 0 = all; else the first N paths in sorted order
  int shard_size = 1000;
  std::string model;          // fingerprint of the prepared model (model::fingerprint); "" = not recorded
};

struct Manifest {
  PlanOptions options;
  std::vector<Item> items;  // sorted by path
  // Number of shards: ceil(items / shard_size).
  int num_shards() const;
  // Items [begin, end) of shard s.
  std::pair<std::size_t, std::size_t> shard_range(int s) const;
};

// The label of a path: its parent folder's name.
std::string label_of(const std::string& path);

// The shards of a list such as "0,3,5-7" (each checked to be < num_shards). Throws orchard::Error
// naming the bad entry.
std::vector<int> parse_shard_list(const std::string& list, int num_shards);

// Lists INPUT and returns items sorted by path (limited when options.limit > 0).
std::vector<Item> list_items(const storage::Location& input, const PlanOptions& options);

// Reads OUTPUT/_manifest.parquet. Throws orchard::Error naming the file when it is missing or
// malformed.
Manifest load_manifest(const storage::Location& output);

// Loads OUTPUT/_manifest.parquet when it exists (checking the options match, else throws naming
// the difference), or lists INPUT and writes it. Throws when INPUT has no matching file.
Manifest plan(const storage::Location& input, const storage::Location& output, const PlanOptions& options);

// Throws orchard::Error, saying what to do, when the manifest records a model other than
// `fingerprint` (its vectors would mix with another model's); fine when either is not recorded.
void check_model(const Manifest& m, const std::string& fingerprint, const storage::Location& output);

}  // namespace orchard::dataset
