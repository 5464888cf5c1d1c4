#pragma once
// PCA as Spark MLlib's PCA does it, from moments that merge: count, sum and Gram matrix in double.
#include <cstdint>
#include <vector>

namespace orchard::pca {

// Sufficient statistics of a set of dim-dimensional rows (accumulated in double).
struct Moments {
  int dim = 0;
  std::int64_t count = 0;
  std::vector<double> sum;   // dim: the plain column sums (mean = sum / count)
  std::vector<double> gram;  // dim x dim row-major: the centred scatter sum (x - mean)(x - mean)^T

  explicit Moments(int dim = 0);
  // Adds n rows (row-major n x dim floats). Cost O(n dim^2) through BLAS.
  void add_rows(const float* rows, std::int64_t n);
  // Adds another set's statistics (same dim).
  void merge(const Moments& other);
  // The upper triangle of gram, row by row (i <= j): dim (dim + 1) / 2 values, what travels.
  std::vector<double> packed_gram() const;
  // Moments from count, sum and packed_gram() values. Throws orchard::Error when sizes disagree.
  static Moments from_packed(int dim, std::int64_t count, std::vector<double> sum, const std::vector<double>& packed);
};

// A fitted PCA: all dim components, eigenvalues descending.
struct Fit {
  int dim = 0;
  std::int64_t count = 0;
  std::vector<double> mean;            // dim
  std::vector<double> eigenvalues;     // dim, descending (covariance with MLlib's 1/(n-1))
  std::vector<double> explained_ratio; // dim, eigenvalue / sum of eigenvalues
  std::vector<double> components;      // dim x dim, row i = component i (unit norm)
};

// Fits the covariance eigendecomposition (LAPACK dsyevd). Throws orchard::Error when count < 2.
Fit fit(const Moments& m);

// Smallest k whose cumulative explained ratio >= variance (0 < variance <= 1).
int choose_k(const Fit& f, double variance);

// Projects rows (n x dim) on the first k components into out (n x k), as MLlib's
// PCAModel.transform does (no centring) unless center is true (scores of x - mean).
void project(const Fit& f, int k, const float* rows, std::int64_t n, bool center, float* out);

}  // namespace orchard::pca
