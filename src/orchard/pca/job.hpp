#pragma once
// PCA over OUTPUT in three steps that `orchard pca` runs in process and a distributed run spreads
// over tasks: moments of some features parts -> fit of the merged moments (on one machine) ->
// projection of some parts with the saved model.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "orchard/pca/files.hpp"
#include "orchard/pca/pca.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::pca {

struct JobOptions {
  double variance = 0.90;  // used when k == 0
  int k = 0;               // fixed number of components (overrides variance)
  bool center = false;     // mean-centred scores instead of MLlib's uncentred projection
  std::string csv;         // also write path,label,pca_1..pca_k to this CSV file (in-process run only)
  int threads = 0;         // parts read in parallel; 0 = all cores
  std::function<void()> before_writing;  // run_job calls it once checks and moments are done, before pca/ changes
};

// Throws orchard::Error naming the option when o cannot give a fit (--variance outside (0, 1], --k < 0).
void check_options(const JobOptions& o);

// Throws orchard::Error naming the missing shards and the command that makes them when OUTPUT's
// features/ lacks a part of its manifest's plan (a PCA must never fit a subset silently). An
// OUTPUT without a manifest (features/ written by another tool) has no plan to check.
void check_complete(const storage::Location& output, const std::vector<int>& feature_shards);

struct JobSummary {
  std::int64_t rows = 0;
  int k = 0;
  double cumulative = 0;      // explained by the first k components
  double fit_seconds = 0, transform_seconds = 0;
};

// The shard numbers of OUTPUT's features parts, sorted.
std::vector<int> feature_shards(const storage::Location& output);

// Moments (count, sum, centred Gram in double) of the features parts of these shards, read on
// `threads` threads (0 = all cores). Throws orchard::Error naming a missing or malformed part.
Moments part_moments(const storage::Location& output, const std::vector<int>& shards, int threads);

// Fits merged moments and writes pca/explained_variance.csv and pca/model.parquet (removing the
// pca_features/ parts of an earlier fit). Returns the model it saved; fills s.rows, s.k, s.cumulative.
SavedModel fit_and_save(const storage::Location& output, const Moments& m, const JobOptions& o, JobSummary& s);

// Projects the features parts of these shards into pca_features/ (one part each, published
// atomically). When csv_rows is given, appends each part's CSV rows (path,label,pca_1..) to it.
void project_parts(const storage::Location& output, const SavedModel& model, const std::vector<int>& shards,
                   int threads, std::vector<std::string>* csv_rows = nullptr);

// `orchard pca`: checks (options, a complete features/), every step in this process, then the CSV
// when options.csv is set.
JobSummary run_job(const storage::Location& output, const JobOptions& options);

}  // namespace orchard::pca
