#include "orchard/pca/job.hpp"

#include <arrow/api.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <exception>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <thread>

#include <cblas.h>

#include "orchard/dataset/manifest.hpp"
#include "orchard/error.hpp"
#include "orchard/threads.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/pca/pca.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::pca {
namespace {
using Clock = std::chrono::steady_clock;
constexpr int kDim = model::kEmbeddingDim;
constexpr std::int64_t kBatchRows = 4096;  // rows in memory per thread (~20 MB of features)

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Runs f(part index) over the parts on `threads` threads; rethrows the first error.
// Runs f(part index) over the parts on `threads` threads; rethrows the first error as it was
// thrown (its kind intact: a store failure stays a store failure).
template <typename F>
void parallel_parts(std::size_t n, int threads, F&& f) {
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i; (i = next.fetch_add(1)) < n;) {
        try {
          f(i, t);
        } catch (...) {
          std::lock_guard lock(mu);
          if (!error) error = std::current_exception();
          next = n;
        }
      }
    });
  for (auto& p : pool) p.join();
  if (error) std::rethrow_exception(error);
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

// The shortest text that reads back as the same float (as pandas and Python's repr write it).
std::string shortest(float v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : format_double(v);
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

// The values of row 0 of a list<double> column.
std::vector<double> first_list(const arrow::Table& t, const std::string& name, const std::string& file) {
  const auto col = table::checked_column(t, name, *arrow::list(arrow::float64()), file);
  const auto& lists = static_cast<const arrow::ListArray&>(*col);
  if (lists.length() < 1 || lists.IsNull(0)) throw Error(file + ": column '" + name + "' is empty");
  const auto& v = static_cast<const arrow::DoubleArray&>(*lists.values());
  const auto off = lists.value_offset(0);
  return {v.raw_values() + off, v.raw_values() + off + lists.value_length(0)};
}

const char* kCentred = "centred: components . (x - mean)";

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
                                {center ? kCentred
                                        : "mllib: components . x (no centring, as PCAModel.transform)",
                                 std::to_string(f.count)}));
  auto table = arrow::Table::Make(
      schema, {storage::value_or_throw(kb.Finish(), "pca model"), one_list(doubles(f.mean.data(), f.dim)),
               one_list(rows), one_list(doubles(f.eigenvalues.data(), f.dim)),
               one_list(doubles(f.explained_ratio.data(), f.dim))});
  table::write_table(file, *table);
}
}  // namespace

double SavedModel::cumulative() const {
  double c = 0;
  for (int i = 0; i < k && i < static_cast<int>(explained_ratio.size()); ++i) c += explained_ratio[i];
  return c;
}

SavedModel read_model(const storage::Location& file) {
  const std::string name = file.display();
  auto t = table::read_table(file);
  if (t->num_rows() != 1) throw Error(name + ": expected one row, found " + std::to_string(t->num_rows()));
  SavedModel m;
  m.k = std::static_pointer_cast<arrow::Int32Array>(table::checked_column(*t, "k", *arrow::int32(), name))->Value(0);
  m.mean = first_list(*t, "mean", name);
  m.dim = static_cast<int>(m.mean.size());
  m.explained_ratio = first_list(*t, "explained_variance_ratio", name);
  const auto comps = table::checked_column(*t, "components", *arrow::list(arrow::list(arrow::float64())), name);
  const auto& outer = static_cast<const arrow::ListArray&>(*comps);
  const auto& rows = static_cast<const arrow::ListArray&>(*outer.values());
  const auto& v = static_cast<const arrow::DoubleArray&>(*rows.values());
  if (m.k < 1 || m.k != outer.value_length(0))
    throw Error(name + ": k = " + std::to_string(m.k) + " but it holds " + std::to_string(outer.value_length(0)) +
                " components; rerun `orchard pca`");
  for (std::int64_t r = outer.value_offset(0); r < outer.value_offset(0) + outer.value_length(0); ++r) {
    if (rows.value_length(r) != m.dim)
      throw Error(name + ": component " + std::to_string(r) + " has " + std::to_string(rows.value_length(r)) +
                  " values, the mean has " + std::to_string(m.dim) + "; rerun `orchard pca`");
    m.components.insert(m.components.end(), v.raw_values() + rows.value_offset(r),
                        v.raw_values() + rows.value_offset(r) + m.dim);
  }
  if (const auto meta = t->schema()->metadata()) {
    if (auto p = meta->Get("projection"); p.ok()) m.center = *p == kCentred;
    if (auto r = meta->Get("rows"); r.ok()) m.rows = std::atoll(r->c_str());
  }
  return m;
}

std::vector<int> feature_shards(const storage::Location& output) {
  return table::part_shards(layout::features_dir(output));
}

Moments part_moments(const storage::Location& output, const std::vector<int>& shards, int threads_option) {
  const int threads = resolve_threads(threads_option);
  // Parallelism comes from the part threads; a multithreaded BLAS under them would oversubscribe.
  openblas_set_num_threads(1);
  std::vector<Moments> partial(threads, Moments(kDim));
  parallel_parts(shards.size(), threads, [&](std::size_t i, int t) {
    table::for_each_batch(layout::feature_part(output, shards[i]), "features", kDim, kBatchRows,
                          [&](const table::VectorRows& rows) {
                            partial[t].add_rows(rows.values.data(), static_cast<std::int64_t>(rows.size()));
                          });
  });
  Moments all(kDim);
  for (const auto& p : partial) all.merge(p);
  return all;
}

void write_moments(const storage::Location& file, const Moments& m) {
  arrow::Int32Builder dim;
  arrow::Int64Builder count;
  storage::check(dim.Append(m.dim), "moments");
  storage::check(count.Append(m.count), "moments");
  const auto packed = m.packed_gram();
  auto schema = arrow::schema({arrow::field("dim", arrow::int32(), false), arrow::field("count", arrow::int64(), false),
                               arrow::field("sum", arrow::list(arrow::float64()), false),
                               arrow::field("gram_upper", arrow::list(arrow::float64()), false)},
                              arrow::key_value_metadata({"gram"}, {"centred scatter sum, upper triangle row by row"}));
  auto table = arrow::Table::Make(schema, {storage::value_or_throw(dim.Finish(), "moments"),
                                           storage::value_or_throw(count.Finish(), "moments"),
                                           one_list(doubles(m.sum.data(), m.sum.size())),
                                           one_list(doubles(packed.data(), packed.size()))});
  table::write_table(file, *table);
}

Moments read_moments(const storage::Location& file) {
  const std::string name = file.display();
  auto t = table::read_table(file);
  const auto dims = std::static_pointer_cast<arrow::Int32Array>(table::checked_column(*t, "dim", *arrow::int32(), name));
  const auto counts = std::static_pointer_cast<arrow::Int64Array>(table::checked_column(*t, "count", *arrow::int64(), name));
  const auto sums = table::checked_column(*t, "sum", *arrow::list(arrow::float64()), name);
  const auto grams = table::checked_column(*t, "gram_upper", *arrow::list(arrow::float64()), name);
  auto values = [](const std::shared_ptr<arrow::Array>& a, std::int64_t r) {
    const auto& l = static_cast<const arrow::ListArray&>(*a);
    const auto& v = static_cast<const arrow::DoubleArray&>(*l.values());
    return std::vector<double>(v.raw_values() + l.value_offset(r), v.raw_values() + l.value_offset(r) + l.value_length(r));
  };
  Moments all;
  for (std::int64_t r = 0; r < t->num_rows(); ++r) {
    try {
      all.merge(Moments::from_packed(dims->Value(r), counts->Value(r), values(sums, r), values(grams, r)));
    } catch (const Error& e) {
      throw Error(name + ": row " + std::to_string(r) + ": " + e.what());
    }
  }
  if (all.dim == 0) all = Moments(kDim);
  return all;
}

void check_options(const JobOptions& o) {
  if (o.k < 0 || o.k > kDim)
    throw Error("--k " + std::to_string(o.k) + " is outside 1-" + std::to_string(kDim) + " (the features' width)");
  if (o.k == 0 && !(o.variance > 0 && o.variance <= 1))
    throw Error("--variance " + format_double(o.variance) + " is outside (0, 1]; give a share such as 0.90");
}

void check_complete(const storage::Location& output, const std::vector<int>& feature_shards) {
  // features/ made elsewhere (no plan to hold it to) is taken as it is; a failed check throws.
  if (!storage::exists(layout::manifest(output))) return;
  const auto manifest = dataset::load_manifest(output);
  std::vector<int> missing;
  for (int s = 0; s < manifest.num_shards(); ++s)
    if (!std::binary_search(feature_shards.begin(), feature_shards.end(), s)) missing.push_back(s);
  if (missing.empty()) return;
  throw Error(layout::features_dir(output).display() + " is incomplete: " + std::to_string(missing.size()) + " of " +
              std::to_string(manifest.num_shards()) + " shards are not featurized (the first: " +
              layout::part_name(missing.front()) + "); finish them with `orchard featurize " + manifest.options.input +
              " " + output.display() + "` and the options it was started with, then run `orchard pca` again");
}

SavedModel fit_and_save(const storage::Location& output, const Moments& m, const JobOptions& o, JobSummary& s) {
  check_options(o);
  const Fit f = fit(m);
  s.rows = f.count;
  s.k = o.k > 0 ? o.k : choose_k(f, o.variance);
  storage::make_dirs(layout::pca_dir(output));
  write_explained_variance(layout::explained_variance(output), f);
  write_model(layout::pca_model(output), f, s.k, o.center);
  // Parts projected by an earlier fit no longer match this model.
  for (const auto& old : table::list_parts(layout::pca_features_dir(output))) storage::remove(old);
  SavedModel saved{s.k, f.dim, f.count, o.center, f.mean,
                   {f.components.begin(), f.components.begin() + static_cast<std::ptrdiff_t>(s.k) * f.dim},
                   f.explained_ratio};
  s.cumulative = saved.cumulative();
  return saved;
}

void project_parts(const storage::Location& output, const SavedModel& model, const std::vector<int>& shards,
                   int threads_option, std::vector<std::string>* csv_rows) {
  const int threads = resolve_threads(threads_option);
  openblas_set_num_threads(1);
  Fit f;  // the first k components are all a projection reads
  f.dim = model.dim;
  f.mean = model.mean;
  f.components = model.components;
  const int k = model.k;
  const auto out_dir = layout::pca_features_dir(output);
  storage::make_dirs(out_dir);
  std::vector<std::string> csv_chunks(shards.size());
  parallel_parts(shards.size(), threads, [&](std::size_t i, int) {
    table::write_vectors_streamed(layout::pca_part(output, shards[i]), "pca", [&](const table::EmitFn& emit) {
      std::string csv;  // this attempt's rows: a retried write starts again from none
      table::VectorRows out;
      table::for_each_batch(layout::feature_part(output, shards[i]), "features", model.dim, kBatchRows,
                            [&](const table::VectorRows& rows) {
        out.dim = k;
        out.paths = rows.paths;
        out.labels = rows.labels;
        out.values.resize(rows.size() * k);
        project(f, k, rows.values.data(), static_cast<std::int64_t>(rows.size()), model.center, out.values.data());
        emit(out);
        if (csv_rows)
          for (std::size_t r = 0; r < out.size(); ++r) {
            csv += csv_quote(out.paths[r]) + ',' + csv_quote(out.labels[r]);
            for (int j = 0; j < k; ++j) csv += ',' + shortest(out.values[r * k + j]);
            csv += '\n';
          }
      });
      if (csv_rows) csv_chunks[i] = std::move(csv);
    });
  });
  if (csv_rows)
    for (auto& c : csv_chunks) csv_rows->push_back(std::move(c));
}

JobSummary run_job(const storage::Location& output, const JobOptions& o) {
  check_options(o);
  const auto shards = feature_shards(output);
  if (shards.empty())
    throw Error(layout::features_dir(output).display() + ": no part files; run `orchard featurize INPUT " +
                output.display() + "` first");
  check_complete(output, shards);
  JobSummary s;
  auto t0 = Clock::now();
  const auto moments = part_moments(output, shards, o.threads);
  if (o.before_writing) o.before_writing();
  const auto model = fit_and_save(output, moments, o, s);
  s.fit_seconds = since(t0);
  t0 = Clock::now();
  std::vector<std::string> csv_rows;
  project_parts(output, model, shards, o.threads, o.csv.empty() ? nullptr : &csv_rows);
  if (!o.csv.empty()) {
    std::ostringstream os;
    os << "path,label";
    for (int j = 1; j <= s.k; ++j) os << ",pca_" << j;
    os << '\n';
    for (const auto& c : csv_rows) os << c;
    storage::write_text(storage::open(o.csv), os.str());
  }
  s.transform_seconds = since(t0);
  return s;
}

}  // namespace orchard::pca
