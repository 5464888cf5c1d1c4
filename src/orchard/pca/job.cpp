#include "orchard/pca/job.hpp"

#include <arrow/api.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <thread>

#include <cblas.h>

#include "orchard/error.hpp"
#include "orchard/threads.hpp"
#include "orchard/pca/pca.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::pca {
namespace {
using Clock = std::chrono::steady_clock;
constexpr int kDim = 1280;
constexpr std::int64_t kBatchRows = 4096;  // rows in memory per thread (~20 MB of features)

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Runs f(part index) over the parts on `threads` threads; rethrows the first error.
template <typename F>
void parallel_parts(std::size_t n, int threads, F&& f) {
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  std::string error;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i; (i = next.fetch_add(1)) < n;) {
        try {
          f(i, t);
        } catch (const std::exception& e) {
          std::lock_guard lock(mu);
          if (error.empty()) error = e.what();
          next = n;
        }
      }
    });
  for (auto& p : pool) p.join();
  if (!error.empty()) throw Error(error);
}

// RFC 4180 field: quoted, inner quotes doubled.
std::string csv_quote(const std::string& s) {
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string format_double(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

void write_explained_variance(const storage::Location& file, const Fit& f) {
  std::ostringstream os;
  os << "component,explained_variance_ratio,cumulative\n";
  double cum = 0;
  for (int i = 0; i < f.dim; ++i) {
    cum += f.explained_ratio[i];
    os << i + 1 << "," << format_double(f.explained_ratio[i]) << "," << format_double(cum) << "\n";
  }
  storage::write_text(file, os.str());
}

std::shared_ptr<arrow::Array> doubles(const double* v, std::size_t n) {
  arrow::DoubleBuilder b;
  storage::check(b.AppendValues(v, static_cast<std::int64_t>(n)), "pca model");
  return storage::value_or_throw(b.Finish(), "pca model");
}

std::shared_ptr<arrow::Array> one_list(const std::shared_ptr<arrow::Array>& values) {
  arrow::Int32Builder ob;
  storage::check(ob.AppendValues({0, static_cast<std::int32_t>(values->length())}), "pca model");
  auto offs = storage::value_or_throw(ob.Finish(), "pca model");
  return storage::value_or_throw(arrow::ListArray::FromArrays(*offs, *values), "pca model");
}

void write_model(const storage::Location& file, const Fit& f, int k, bool center) {
  std::vector<std::int32_t> comp_offsets;
  for (int i = 0; i <= k; ++i) comp_offsets.push_back(i * f.dim);
  arrow::Int32Builder ob;
  storage::check(ob.AppendValues(comp_offsets), "pca model");
  auto rows = storage::value_or_throw(
      arrow::ListArray::FromArrays(*storage::value_or_throw(ob.Finish(), "pca model"),
                                   *doubles(f.components.data(), static_cast<std::size_t>(k) * f.dim)),
      "pca model");
  arrow::Int32Builder kb;
  storage::check(kb.Append(k), "pca model");
  auto schema = arrow::schema(
      {arrow::field("k", arrow::int32(), false), arrow::field("mean", arrow::list(arrow::float64())),
       arrow::field("components", arrow::list(arrow::list(arrow::float64()))),
       arrow::field("eigenvalues", arrow::list(arrow::float64())),
       arrow::field("explained_variance_ratio", arrow::list(arrow::float64()))},
      arrow::key_value_metadata({"projection", "rows"},
                                {center ? "centred: components . (x - mean)"
                                        : "mllib: components . x (no centring, as PCAModel.transform)",
                                 std::to_string(f.count)}));
  auto table = arrow::Table::Make(
      schema, {storage::value_or_throw(kb.Finish(), "pca model"), one_list(doubles(f.mean.data(), f.dim)),
               one_list(rows), one_list(doubles(f.eigenvalues.data(), f.dim)),
               one_list(doubles(f.explained_ratio.data(), f.dim))});
  table::write_table(file, *table);
}
}  // namespace

SavedModel read_model(const storage::Location& file) {
  auto t = table::read_table(file);
  if (t->num_rows() != 1) throw Error(file.display() + ": expected one row, found " + std::to_string(t->num_rows()));
  SavedModel m;
  m.k = std::static_pointer_cast<arrow::Int32Array>(table::checked_column(*t, "k", *arrow::int32(), file.display()))->Value(0);
  auto comps = table::checked_column(*t, "components", *arrow::list(arrow::list(arrow::float64())), file.display());
  m.components = static_cast<const arrow::ListArray&>(*comps).value_length(0);
  auto ratios = table::checked_column(*t, "explained_variance_ratio", *arrow::list(arrow::float64()), file.display());
  const auto& lists = static_cast<const arrow::ListArray&>(*ratios);
  const auto& v = static_cast<const arrow::DoubleArray&>(*lists.values());
  for (std::int64_t i = 0; i < lists.value_length(0); ++i) m.explained_ratio.push_back(v.Value(lists.value_offset(0) + i));
  return m;
}

JobSummary run_job(const storage::Location& output, const JobOptions& o) {
  const auto parts = table::list_parts(layout::features_dir(output));
  if (parts.empty())
    throw Error(layout::features_dir(output).path + ": no part files; run `orchard featurize INPUT " + output.display() + "` first");
  const int threads = resolve_threads(o.threads);
  // Parallelism comes from the part threads; a multithreaded BLAS under them would oversubscribe.
  openblas_set_num_threads(1);
  JobSummary s;
  auto t0 = Clock::now();
  std::vector<Moments> partial(threads, Moments(kDim));
  parallel_parts(parts.size(), threads, [&](std::size_t i, int t) {
    table::for_each_batch(parts[i], "features", kDim, kBatchRows, [&](const table::VectorRows& rows) {
      partial[t].add_rows(rows.values.data(), static_cast<std::int64_t>(rows.size()));
    });
  });
  Moments all(kDim);
  for (const auto& p : partial) all.merge(p);
  const Fit f = fit(all);
  s.rows = f.count;
  if (o.k > 0) {
    if (o.k > kDim) throw Error("--k " + std::to_string(o.k) + " is larger than the " + std::to_string(kDim) + " features");
    s.k = o.k;
  } else {
    if (!(o.variance > 0 && o.variance <= 1)) throw Error("--variance must be in (0, 1], e.g. 0.90");
    s.k = choose_k(f, o.variance);
  }
  for (int i = 0; i < s.k; ++i) s.cumulative += f.explained_ratio[i];
  const auto pca_dir = output.child("pca");
  storage::make_dirs(pca_dir);
  write_explained_variance(pca_dir.child("explained_variance.csv"), f);
  write_model(pca_dir.child("model.parquet"), f, s.k, o.center);
  s.fit_seconds = since(t0);

  t0 = Clock::now();
  const auto out_dir = layout::pca_features_dir(output);
  storage::make_dirs(out_dir);
  for (const auto& old : table::list_parts(out_dir))  // parts of an earlier run with other shards
    storage::remove(old);
  std::vector<std::string> csv_chunks(parts.size());
  parallel_parts(parts.size(), threads, [&](std::size_t i, int) {
    const auto name = parts[i].path.substr(parts[i].path.rfind('/') + 1);
    std::ostringstream csv;
    table::write_vectors_streamed(out_dir.child(name), "pca", [&](const table::EmitFn& emit) {
      table::VectorRows out;
      table::for_each_batch(parts[i], "features", kDim, kBatchRows, [&](const table::VectorRows& rows) {
        out.dim = s.k;
        out.paths = rows.paths;
        out.labels = rows.labels;
        out.values.resize(rows.size() * s.k);
        project(f, s.k, rows.values.data(), static_cast<std::int64_t>(rows.size()), o.center, out.values.data());
        emit(out);
        if (!o.csv.empty())
          for (std::size_t r = 0; r < out.size(); ++r) {
            csv << csv_quote(out.paths[r]) << ',' << csv_quote(out.labels[r]);
            for (int j = 0; j < s.k; ++j) csv << ',' << out.values[r * s.k + j];
            csv << '\n';
          }
      });
    });
    if (!o.csv.empty()) csv_chunks[i] = csv.str();
  });
  if (!o.csv.empty()) {
    std::ostringstream os;
    os << "path,label";
    for (int j = 1; j <= s.k; ++j) os << ",pca_" << j;
    os << '\n';
    for (const auto& c : csv_chunks) os << c;
    storage::write_text(storage::open(o.csv), os.str());
  }
  s.transform_seconds = since(t0);
  return s;
}

}  // namespace orchard::pca
