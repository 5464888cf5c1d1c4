#pragma once
// `orchard pca`: moments over OUTPUT/features parts, the fit, and the files it writes.
#include <cstdint>
#include <string>
#include <vector>

#include "orchard/storage/storage.hpp"

namespace orchard::pca {

struct JobOptions {
  double variance = 0.90;  // used when k == 0
  int k = 0;               // fixed number of components (overrides variance)
  bool center = false;     // mean-centred scores instead of MLlib's uncentred projection
  std::string csv;         // also write path,label,pca_1..pca_k to this CSV file
  int threads = 0;         // parts read in parallel; 0 = all cores
};

struct JobSummary {
  std::int64_t rows = 0;
  int k = 0;
  double cumulative = 0;      // explained by the first k components
  double fit_seconds = 0, transform_seconds = 0;
};

// What OUTPUT/pca/model.parquet says, as validate and report need it.
struct SavedModel {
  int k = 0;
  int components = 0;                   // rows of the components matrix (should equal k)
  std::vector<double> explained_ratio;  // all components
};

// Reads pca/model.parquet. Throws orchard::Error naming the file when it is malformed.
SavedModel read_model(const storage::Location& file);

// Fits PCA on OUTPUT/features and writes pca/explained_variance.csv, pca/model.parquet and
// pca_features/part-*.parquet (one per features part). Throws orchard::Error naming the problem.
JobSummary run_job(const storage::Location& output, const JobOptions& options);

}  // namespace orchard::pca
