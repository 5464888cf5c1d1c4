#pragma once
// The PCA's files, read and written here for every stage that needs them (the pca job, validate,
// report, project): OUTPUT/pca/model.parquet and the moments files of a distributed fit.
#include <cstdint>
#include <vector>
#include <string>

#include "orchard/pca/pca.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::pca {

// What OUTPUT/pca/model.parquet holds: everything a projection needs.
struct SavedModel {
  int k = 0;
  int dim = 0;
  std::int64_t rows = 0;                // rows the fit saw
  bool center = false;                  // projection of x - mean instead of x (MLlib)
  std::vector<double> mean;             // dim
  std::vector<double> components;       // k x dim, row i = component i
  std::vector<double> explained_ratio;  // all dim components
  double cumulative() const;            // explained by the first k
};

// A fingerprint of what a projection computes (k, centring, mean, the k components): "<16 hex>".
// A classifier records it and refuses another PCA's scores.
std::string fingerprint(const SavedModel& m);

// What pca::project needs of a saved model (its mean and first k components).
Fit projection_of(const SavedModel& m);

// Reads pca/model.parquet. Throws orchard::Error naming the file when it is malformed.
SavedModel read_model(const storage::Location& file);

// Writes pca/model.parquet: k, mean, the first k components, eigenvalues, explained ratios, and
// whether projections are centred (schema metadata), with the rows the fit saw.
void write_model(const storage::Location& file, const Fit& f, int k, bool center);

// A moments file: one Parquet row per set (dim, count, sum, packed upper Gram), as small as the
// statistics allow (6.6 MB at 1280 dimensions); read_moments merges every row it holds.
void write_moments(const storage::Location& file, const Moments& m);
Moments read_moments(const storage::Location& file);

}  // namespace orchard::pca
