// PCA with the semantics of Spark MLlib (checked in apache/spark, Spark 4.x sources):
//
// * ml/feature/PCA.scala: PCA.fit maps the column to old mllib vectors and calls
//   mllib.feature.PCA(k).fit, which calls RowMatrix.computePrincipalComponentsAndExplainedVariance(k).
// * mllib/linalg/distributed/RowMatrix.scala: for dense rows (n <= 65535 columns) computeCovariance
//   takes the column mean (Statistics.colStats) and then, in computeDenseVectorCovariance,
//   sums (x - mean)(x - mean)^T over all rows and divides by (m - 1). (Only all-sparse input takes
//   the one-pass E[XY] - E[X]E[Y] path, whose inaccuracy the source itself notes.) The components
//   are the left singular vectors of that covariance (breeze svd), and
//   explainedVariance = s / sum(s) with s its singular values, i.e. |eigenvalues|, descending.
// * PCAModel.transform (ml and mllib) is `pc.transpose.multiply(vector)`: plain pc^T x, the mean is
//   NOT subtracted. project(..., center=false) does exactly that; center=true gives pc^T (x - mean).
//
// Moments: to stay as accurate as Spark's two-pass centring while keeping one pass and merges,
// `gram` holds the centred scatter sum (x - mean)(x - mean)^T, not the raw sum x x^T. Rows are
// added in blocks: each block is centred on its own mean (dsyrk) and joined to the running total
// with the pairwise update of Chan, Golub & LeVeque,
//   M = M_a + M_b + (n_a n_b / n) (mean_b - mean_a)(mean_b - mean_a)^T,
// which merge() also uses. The raw form (Gram - n mean mean^T) cancels catastrophically when the
// mean is large against the spread (ReLU6 embeddings are non-negative); this form does not.
// `sum` is the plain column sum, so mean = sum / count. Memory is O(dim^2), whatever the rows.
//
// Sign convention: LAPACK's eigenvector signs are arbitrary (so are Spark's); each component is
// flipped so that its entry of largest absolute value (the first such, on ties) is positive.
#include "orchard/pca/pca.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "orchard/error.hpp"

// LAPACK's symmetric eigensolver, as OpenBLAS exports it (Fortran calling convention, with the
// lengths of the two character arguments appended by gfortran).
extern "C" void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                        double* work, const int* lwork, int* iwork, const int* liwork, int* info,
                        std::size_t jobz_len, std::size_t uplo_len);

namespace orchard::pca {
namespace {

constexpr std::int64_t kBlockRows = 512;  // rows converted to double per BLAS call

void mirror_upper(std::vector<double>& a, int d) {
  for (int i = 0; i < d; ++i)
    for (int j = i + 1; j < d; ++j) a[static_cast<std::size_t>(j) * d + i] = a[static_cast<std::size_t>(i) * d + j];
}

}  // namespace

Moments::Moments(int dim_) : dim(dim_) {
  if (dim_ < 0) throw Error("pca: negative dimension " + std::to_string(dim_) + "; pass the feature length");
  sum.assign(dim_, 0.0);
  gram.assign(static_cast<std::size_t>(dim_) * dim_, 0.0);
}

void Moments::add_rows(const float* rows, std::int64_t n) {
  if (n <= 0) return;
  if (dim <= 0) throw Error("pca: Moments has no dimension; construct it with Moments(dim) before adding rows");
  const std::size_t d = dim;
  std::vector<double> block(std::min(n, kBlockRows) * d), bsum(d), delta(d);
  for (std::int64_t start = 0; start < n; start += kBlockRows) {
    const std::int64_t nb = std::min(kBlockRows, n - start);
    const float* src = rows + start * d;
    std::fill(bsum.begin(), bsum.end(), 0.0);
    for (std::int64_t r = 0; r < nb; ++r)
      for (std::size_t j = 0; j < d; ++j) {
        const double v = src[r * d + j];
        block[r * d + j] = v;
        bsum[j] += v;
      }
    // Centre the block on its own mean, then add its scatter (upper triangle only).
    for (std::int64_t r = 0; r < nb; ++r)
      for (std::size_t j = 0; j < d; ++j) block[r * d + j] -= bsum[j] / nb;
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dim, static_cast<int>(nb), 1.0, block.data(), dim, 1.0,
                gram.data(), dim);
    if (count > 0) {  // Chan's correction for the shift between the two means
      for (std::size_t j = 0; j < d; ++j) delta[j] = bsum[j] / nb - sum[j] / count;
      const double c = static_cast<double>(count) * nb / static_cast<double>(count + nb);
      cblas_dsyr(CblasRowMajor, CblasUpper, dim, c, delta.data(), 1, gram.data(), dim);
    }
    for (std::size_t j = 0; j < d; ++j) sum[j] += bsum[j];
    count += nb;
  }
  mirror_upper(gram, dim);
}

void Moments::merge(const Moments& other) {
  if (other.count == 0) return;
  if (other.dim != dim && !(dim == 0 && count == 0))
    throw Error("pca: cannot merge moments of dimension " + std::to_string(other.dim) + " into " +
                std::to_string(dim) + "; all feature vectors must have the same length");
  if (count == 0) {
    *this = other;
    return;
  }
  const std::size_t d = dim;
  std::vector<double> delta(d);
  for (std::size_t j = 0; j < d; ++j) delta[j] = other.sum[j] / other.count - sum[j] / count;
  const double c = static_cast<double>(count) * other.count / static_cast<double>(count + other.count);
  for (std::size_t i = 0; i < d; ++i)
    for (std::size_t j = 0; j < d; ++j) gram[i * d + j] += other.gram[i * d + j] + c * delta[i] * delta[j];
  for (std::size_t j = 0; j < d; ++j) sum[j] += other.sum[j];
  count += other.count;
}

std::vector<double> Moments::packed_gram() const {
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(dim) * (dim + 1) / 2);
  for (int i = 0; i < dim; ++i)
    for (int j = i; j < dim; ++j) out.push_back(gram[static_cast<std::size_t>(i) * dim + j]);
  return out;
}

Moments Moments::from_packed(int dim, std::int64_t count, std::vector<double> sum, const std::vector<double>& packed) {
  Moments m(dim);
  if (sum.size() != static_cast<std::size_t>(dim) || packed.size() != static_cast<std::size_t>(dim) * (dim + 1) / 2)
    throw Error("pca: moments of dimension " + std::to_string(dim) + " need " + std::to_string(dim) + " sums and " +
                std::to_string(static_cast<std::size_t>(dim) * (dim + 1) / 2) + " packed values, got " +
                std::to_string(sum.size()) + " and " + std::to_string(packed.size()));
  m.count = count;
  m.sum = std::move(sum);
  std::size_t p = 0;
  for (int i = 0; i < dim; ++i)
    for (int j = i; j < dim; ++j) {
      m.gram[static_cast<std::size_t>(i) * dim + j] = packed[p];
      m.gram[static_cast<std::size_t>(j) * dim + i] = packed[p++];
    }
  return m;
}

Fit fit(const Moments& m) {
  if (m.count < 2)
    throw Error("pca: need at least 2 feature rows to fit PCA, got " + std::to_string(m.count) +
                "; featurize more images first");
  const int d = m.dim;
  const std::size_t dd = static_cast<std::size_t>(d) * d;
  if (m.sum.size() != static_cast<std::size_t>(d) || m.gram.size() != dd)
    throw Error("pca: malformed moments (sum/gram sizes do not match dim " + std::to_string(d) + ")");

  Fit f;
  f.dim = d;
  f.count = m.count;
  f.mean.resize(d);
  for (int j = 0; j < d; ++j) f.mean[j] = m.sum[j] / static_cast<double>(m.count);

  std::vector<double> cov(dd);
  const double m1 = static_cast<double>(m.count) - 1.0;  // MLlib's 1/(m-1)
  for (std::size_t i = 0; i < dd; ++i) {
    cov[i] = m.gram[i] / m1;
    if (!std::isfinite(cov[i]))
      throw Error("pca: the features contain non-finite values (NaN or Inf); run `orchard validate` to find them");
  }

  // LAPACK's dsyevd (OpenBLAS carries LAPACK) works column-major: the transpose of the row-major
  // upper triangle is the column-major upper triangle, as LAPACKE's row-major wrapper did it.
  std::vector<double> a(dd), w(d);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) a[static_cast<std::size_t>(j) * d + i] = cov[static_cast<std::size_t>(i) * d + j];
  const int lda = std::max(1, d);
  int info = 0, lwork = -1, liwork = -1, iwork_size = 0;
  double work_size = 0;
  dsyevd_("V", "U", &d, a.data(), &lda, w.data(), &work_size, &lwork, &iwork_size, &liwork, &info, 1, 1);  // sizes
  std::vector<double> work(info == 0 ? static_cast<std::size_t>(work_size) : 1);
  std::vector<int> iwork(info == 0 ? static_cast<std::size_t>(iwork_size) : 1);
  lwork = static_cast<int>(work.size());
  liwork = static_cast<int>(iwork.size());
  if (info == 0) dsyevd_("V", "U", &d, a.data(), &lda, w.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  if (info != 0)
    throw Error("pca: LAPACK dsyevd failed (info " + std::to_string(info) + ") on the " + std::to_string(d) + "x" +
                std::to_string(d) + " covariance; check the features for extreme values");

  // dsyevd: ascending eigenvalues, eigenvector j in column j (column-major: a[j*d ...]). Reverse to
  // descending, rows = components.
  f.eigenvalues.resize(d);
  f.components.resize(dd);
  double abs_sum = 0;
  for (int c = 0; c < d; ++c) {
    const int src = d - 1 - c;
    f.eigenvalues[c] = w[src];
    abs_sum += std::abs(w[src]);
    double* row = &f.components[static_cast<std::size_t>(c) * d];
    int arg = 0;
    for (int i = 0; i < d; ++i) {
      row[i] = a[static_cast<std::size_t>(src) * d + i];
      if (std::abs(row[i]) > std::abs(row[arg])) arg = i;
    }
    if (row[arg] < 0)
      for (int i = 0; i < d; ++i) row[i] = -row[i];
  }
  if (!(abs_sum > 0))
    throw Error("pca: all " + std::to_string(m.count) +
                " feature rows are identical, so there is no variance to explain; check the featurize output");
  f.explained_ratio.resize(d);
  for (int c = 0; c < d; ++c) f.explained_ratio[c] = std::abs(f.eigenvalues[c]) / abs_sum;  // MLlib: s / sum(s)
  return f;
}

int choose_k(const Fit& f, double variance) {
  if (!(variance > 0 && variance <= 1))
    throw Error("pca: --variance must be in (0, 1], got " + std::to_string(variance));
  if (f.explained_ratio.empty()) throw Error("pca: the fit has no explained-variance ratios; fit the moments first");
  double cumulative = 0;
  for (std::size_t i = 0; i < f.explained_ratio.size(); ++i) {
    cumulative += f.explained_ratio[i];
    if (cumulative >= variance) return static_cast<int>(i + 1);
  }
  return static_cast<int>(f.explained_ratio.size());  // rounding kept the total just under 1
}

void project(const Fit& f, int k, const float* rows, std::int64_t n, bool center, float* out) {
  if (k < 1 || k > f.dim)
    throw Error("pca: k = " + std::to_string(k) + " is outside 1.." + std::to_string(f.dim) + "; choose a valid --k");
  if (n <= 0) return;
  const std::size_t d = f.dim;
  std::vector<double> block(std::min(n, kBlockRows) * d), result(std::min(n, kBlockRows) * k);
  for (std::int64_t start = 0; start < n; start += kBlockRows) {
    const std::int64_t nb = std::min(kBlockRows, n - start);
    const float* src = rows + start * d;
    for (std::int64_t r = 0; r < nb; ++r)
      for (std::size_t j = 0; j < d; ++j) block[r * d + j] = src[r * d + j] - (center ? f.mean[j] : 0.0);
    // result (nb x k) = block (nb x d) * components[0:k]^T (d x k)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nb), k, f.dim, 1.0, block.data(), f.dim,
                f.components.data(), f.dim, 0.0, result.data(), k);
    for (std::int64_t i = 0; i < nb * k; ++i) out[start * k + i] = static_cast<float>(result[i]);
  }
}

}  // namespace orchard::pca
