// PCA: expected values come from constructions with a known answer or from plain long-double
// loops in this file, never from the code under test.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/pca/pca.hpp"

namespace op = orchard::pca;

namespace {

// Rows with an exactly known sample covariance: x_r = mean + Q diag(s) z_r, where Q = H4 / 2
// (orthonormal, entries +-0.5) and z_r are 4 zero-mean Walsh functions of length 8, so
// sum_r z_r z_r^T = 8 I. Every value is a dyadic rational, exact in float. Hence
// cov = Q diag(s^2) Q^T * 8/7: eigenvalues s_i^2 * 8/7, eigenvectors the columns of Q.
constexpr int kD = 4, kN = 8;
const double kQ[kD][kD] = {{0.5, 0.5, 0.5, 0.5}, {0.5, -0.5, 0.5, -0.5}, {0.5, 0.5, -0.5, -0.5}, {0.5, -0.5, -0.5, 0.5}};
const double kS[kD] = {4, 2, 1, 0.5};
const double kMean[kD] = {3, -1, 10, 0.25};

int walsh(int fn, int r) {  // fn in 1..7: (-1)^popcount(fn & r)
  return __builtin_popcount(fn & r) % 2 ? -1 : 1;
}

std::vector<float> known_rows() {
  const int fns[kD] = {1, 2, 4, 7};
  std::vector<float> rows(kN * kD);
  for (int r = 0; r < kN; ++r)
    for (int i = 0; i < kD; ++i) {
      double v = kMean[i];
      for (int j = 0; j < kD; ++j) v += kQ[i][j] * kS[j] * walsh(fns[j], r);
      rows[r * kD + i] = static_cast<float>(v);
    }
  return rows;
}

std::vector<float> random_rows(int n, int d, unsigned seed, double offset, double scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0, 1);
  std::vector<double> a(d * d);  // mixing matrix with a decaying spectrum
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) a[i * d + j] = g(rng) / (1.0 + j);
  std::vector<float> rows(static_cast<std::size_t>(n) * d);
  std::vector<double> z(d);
  for (int r = 0; r < n; ++r) {
    for (auto& v : z) v = g(rng);
    for (int i = 0; i < d; ++i) {
      double v = offset;
      for (int j = 0; j < d; ++j) v += scale * a[i * d + j] * z[j];
      rows[static_cast<std::size_t>(r) * d + i] = static_cast<float>(v);
    }
  }
  return rows;
}

// Two-pass covariance with 1/(n-1) in long double: the independent reference.
std::vector<long double> two_pass_cov(const std::vector<float>& rows, int n, int d) {
  std::vector<long double> mean(d, 0), cov(d * d, 0);
  for (int r = 0; r < n; ++r)
    for (int j = 0; j < d; ++j) mean[j] += rows[static_cast<std::size_t>(r) * d + j];
  for (auto& m : mean) m /= n;
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j)
        cov[i * d + j] += (rows[static_cast<std::size_t>(r) * d + i] - mean[i]) *
                          (rows[static_cast<std::size_t>(r) * d + j] - mean[j]);
  for (auto& c : cov) c /= (n - 1);
  return cov;
}

op::Moments moments_of(const std::vector<float>& rows, int d, std::int64_t from, std::int64_t to) {
  op::Moments m(d);
  m.add_rows(rows.data() + from * d, to - from);
  return m;
}

}  // namespace

TEST(Pca, KnownCovarianceEigenpairs) {
  const auto rows = known_rows();
  const auto f = op::fit(moments_of(rows, kD, 0, kN));
  ASSERT_EQ(f.dim, kD);
  ASSERT_EQ(f.count, kN);
  double total = 0;
  for (double s : kS) total += s * s;
  for (int c = 0; c < kD; ++c) {
    EXPECT_NEAR(f.mean[c], kMean[c], 1e-14);
    EXPECT_NEAR(f.eigenvalues[c], kS[c] * kS[c] * 8.0 / 7.0, 1e-12) << c;
    EXPECT_NEAR(f.explained_ratio[c], kS[c] * kS[c] / total, 1e-14) << c;
    // Component c is column c of Q up to sign (every entry has |x| = 0.5, so the sign rule's
    // "largest entry positive" is decided by rounding here; the sign is checked elsewhere).
    const double sign = f.components[c * kD] * kQ[0][c] > 0 ? 1 : -1;
    for (int i = 0; i < kD; ++i) EXPECT_NEAR(f.components[c * kD + i], sign * kQ[i][c], 1e-12);
  }
}

TEST(Pca, ProjectionWithoutAndWithCentre) {
  const auto rows = known_rows();
  const auto f = op::fit(moments_of(rows, kD, 0, kN));
  const int k = 3;
  std::vector<float> raw(kN * k), centred(kN * k);
  op::project(f, k, rows.data(), kN, /*center=*/false, raw.data());
  op::project(f, k, rows.data(), kN, /*center=*/true, centred.data());
  const int fns[kD] = {1, 2, 4, 7};
  for (int r = 0; r < kN; ++r)
    for (int c = 0; c < k; ++c) {
      // MLlib's transform: q_c . x, with q_c = +-column c of Q (the fitted sign).
      const double sign = f.components[c * kD] * kQ[0][c] > 0 ? 1 : -1;
      double expect_raw = 0;
      for (int i = 0; i < kD; ++i) expect_raw += sign * kQ[i][c] * rows[r * kD + i];
      EXPECT_NEAR(raw[r * k + c], expect_raw, 1e-5) << r << "," << c;
      // Centred scores are +-s_c z_r exactly.
      EXPECT_NEAR(centred[r * k + c], sign * kS[c] * walsh(fns[c], r), 1e-5) << r << "," << c;
    }
  // The two differ by q_c . mean, which is non-zero here: centring really happened (or not).
  double qm = 0;
  for (int i = 0; i < kD; ++i) qm += kQ[i][0] * kMean[i];
  EXPECT_NEAR(raw[0] - centred[0], qm, 1e-5);
}

TEST(Pca, RandomDataMatchesTwoPassCovariance) {
  const int n = 1500, d = 40;
  const auto rows = random_rows(n, d, 7, 0.0, 1.0);
  const auto cov = two_pass_cov(rows, n, d);
  const auto f = op::fit(moments_of(rows, d, 0, n));
  long double trace = 0, scale = 0;
  for (int i = 0; i < d; ++i) trace += cov[i * d + i];
  for (auto c : cov) scale = std::max(scale, std::fabs(c));
  double eig_sum = 0, ratio_sum = 0;
  for (int c = 0; c < d; ++c) {
    eig_sum += f.eigenvalues[c];
    ratio_sum += f.explained_ratio[c];
    if (c > 0) {
      EXPECT_GE(f.eigenvalues[c - 1], f.eigenvalues[c]);
    }
    // C v = lambda v against the reference covariance, and unit norm.
    const double* v = &f.components[c * d];
    long double norm = 0, resid = 0;
    int arg = 0;
    for (int i = 0; i < d; ++i) {
      long double cv = 0;
      for (int j = 0; j < d; ++j) cv += cov[i * d + j] * v[j];
      resid = std::max(resid, std::fabs(cv - f.eigenvalues[c] * v[i]));
      norm += static_cast<long double>(v[i]) * v[i];
      if (std::fabs(v[i]) > std::fabs(v[arg])) arg = i;
    }
    EXPECT_LT(static_cast<double>(resid / scale), 1e-12) << c;
    EXPECT_NEAR(static_cast<double>(norm), 1.0, 1e-12);
    EXPECT_GT(v[arg], 0) << "sign convention: largest |entry| positive, component " << c;
  }
  EXPECT_NEAR(eig_sum, static_cast<double>(trace), 1e-12 * static_cast<double>(trace));
  EXPECT_NEAR(ratio_sum, 1.0, 1e-12);
  // Orthogonality of two components.
  double dot = 0;
  for (int i = 0; i < d; ++i) dot += f.components[i] * f.components[d + i];
  EXPECT_NEAR(dot, 0.0, 1e-12);
}

TEST(Pca, MergeEqualsOnePass) {
  const int n = 1300, d = 24;  // 1300 > one 512-row block, so add_rows itself also merges blocks
  const auto rows = random_rows(n, d, 11, 2.0, 0.5);
  const auto one = moments_of(rows, d, 0, n);
  auto a = moments_of(rows, d, 0, 17);
  a.merge(moments_of(rows, d, 17, 900));
  a.merge(op::Moments(d));  // empty: a no-op
  a.merge(moments_of(rows, d, 900, n));
  op::Moments empty(0);  // an empty, dimensionless accumulator adopts the first merged set
  empty.merge(a);
  for (const auto* m : {&a, &empty}) {
    ASSERT_EQ(m->count, n);
    for (int j = 0; j < d; ++j) EXPECT_NEAR(m->sum[j], one.sum[j], 1e-9 * std::abs(one.sum[j]) + 1e-12);
    for (int i = 0; i < d * d; ++i) EXPECT_NEAR(m->gram[i], one.gram[i], 1e-10 * std::abs(one.gram[i]) + 1e-10);
  }
  // And both are the reference covariance * (n-1).
  const auto cov = two_pass_cov(rows, n, d);
  for (int i = 0; i < d * d; ++i)
    EXPECT_NEAR(a.gram[i] / (n - 1), static_cast<double>(cov[i]), 1e-11 * (1 + std::fabs(static_cast<double>(cov[i]))));
  EXPECT_THROW(a.merge(moments_of(rows, d - 1, 0, 5)), orchard::Error);
}

// A large mean against a small spread: (Gram - n mean mean^T)/(n-1) would cancel ~10 digits here
// (mean^2 / variance ~ 1e10), leaving ~1e-6 relative error; the centred accumulation must not.
TEST(Pca, LargeMeanSmallSpreadStaysAccurate) {
  const int n = 3000, d = 8;
  const auto rows = random_rows(n, d, 3, 1000.0, 0.01);
  const auto cov = two_pass_cov(rows, n, d);
  auto m = moments_of(rows, d, 0, 1000);
  m.merge(moments_of(rows, d, 1000, n));
  for (int i = 0; i < d * d; ++i) {
    const double ref = static_cast<double>(cov[i]);
    const double diag = static_cast<double>(std::sqrt(cov[(i / d) * d + i / d] * cov[(i % d) * d + i % d]));
    EXPECT_NEAR(m.gram[i] / (n - 1), ref, 1e-10 * diag) << i;
  }
  const auto f = op::fit(m);
  long double trace = 0;
  for (int i = 0; i < d; ++i) trace += cov[i * d + i];
  double eig_sum = 0;
  for (double e : f.eigenvalues) eig_sum += e;
  EXPECT_NEAR(eig_sum, static_cast<double>(trace), 1e-10 * static_cast<double>(trace));
}

TEST(Pca, ChooseKBoundaries) {
  op::Fit f;
  f.dim = 4;
  f.explained_ratio = {0.5, 0.25, 0.125, 0.125};  // cumulative 0.5, 0.75, 0.875, 1 (exact in binary)
  EXPECT_EQ(op::choose_k(f, 0.1), 1);
  EXPECT_EQ(op::choose_k(f, 0.5), 1);   // >= : an exact hit stops there
  EXPECT_EQ(op::choose_k(f, std::nextafter(0.5, 1.0)), 2);
  EXPECT_EQ(op::choose_k(f, 0.75), 2);
  EXPECT_EQ(op::choose_k(f, 0.8), 3);
  EXPECT_EQ(op::choose_k(f, 0.875), 3);
  EXPECT_EQ(op::choose_k(f, 0.9), 4);
  EXPECT_EQ(op::choose_k(f, 1.0), 4);
  EXPECT_THROW(op::choose_k(f, 0.0), orchard::Error);
  EXPECT_THROW(op::choose_k(f, -0.5), orchard::Error);
  EXPECT_THROW(op::choose_k(f, 1.01), orchard::Error);
  EXPECT_THROW(op::choose_k(f, std::nan("")), orchard::Error);
  // A total that rounds to just under 1 still yields all components for variance 1.
  f.explained_ratio = {0.7, 0.2, 0.1 - 1e-16, 0.0};
  EXPECT_EQ(op::choose_k(f, 1.0), 4);
}

TEST(Pca, ErrorsNameTheProblem) {
  op::Moments one(3);
  const float row[3] = {1, 2, 3};
  one.add_rows(row, 1);
  try {
    op::fit(one);
    FAIL() << "fit with one row must throw";
  } catch (const orchard::Error& e) {
    EXPECT_NE(std::string(e.what()).find("at least 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(op::fit(op::Moments(3)), orchard::Error);
  op::Moments same(3);
  same.add_rows(row, 1);
  same.add_rows(row, 1);
  EXPECT_THROW(op::fit(same), orchard::Error);  // no variance at all
  const auto rows = known_rows();
  const auto f = op::fit(moments_of(rows, kD, 0, kN));
  std::vector<float> out(kN * kD);
  EXPECT_THROW(op::project(f, 0, rows.data(), kN, false, out.data()), orchard::Error);
  EXPECT_THROW(op::project(f, kD + 1, rows.data(), kN, false, out.data()), orchard::Error);
  auto bad = rows;
  bad[5] = std::nanf("");
  EXPECT_THROW(op::fit(moments_of(bad, kD, 0, kN)), orchard::Error);
}
