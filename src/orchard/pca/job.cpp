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
#include "orchard/pca/files.hpp"
#include "orchard/pca/pca.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::pca {
namespace {
using Clock = std::chrono::steady_clock;
constexpr int kDim = model::kEmbeddingDim;
constexpr std::int64_t kBatchRows = 4096;  // rows in memory per thread (~20 MB of features)

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

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

}  // namespace

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
  const Fit f = projection_of(model);  // the first k components are all a projection reads
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
