#include "orchard/validate/validate.hpp"

#include <arrow/api.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>
#include <map>
#include <unordered_map>

#include "orchard/dataset/manifest.hpp"
#include "orchard/error.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/pca/files.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::validate {
namespace {

constexpr int kDim = model::kEmbeddingDim;
constexpr std::int64_t kBatchRows = 4096;  // rows held at once while reading a part

struct Checker {
  explicit Checker(storage::Location o) : out(std::move(o)) {}
  storage::Location out;
  Result r;
  std::unordered_map<std::string, std::string> label_of;  // manifest path -> label
  std::unordered_map<std::string, int> seen;              // path -> times seen in features+errors
  std::unordered_map<std::string, int> embedded;          // path -> 1 when in features/

  void problem(const std::string& p) { r.problems.push_back(p); }

  // Row-level problems are reported once per (file, kind) with a count and the first example.
  struct Tally { std::int64_t count = 0; std::string first; };
  std::map<std::pair<std::string, std::string>, Tally> row_problems;
  void row_problem(const std::string& file, const std::string& kind, const std::string& example) {
    auto& t = row_problems[{file, kind}];
    if (t.count++ == 0) t.first = example;
  }
  void flush_row_problems() {
    for (const auto& [key, t] : row_problems)
      problem(key.first + ": " + std::to_string(t.count) + " row(s) " + key.second + " (first: " + t.first + ")");
    row_problems.clear();
  }

  // Runs f, turning an unreadable or mis-shaped file into a problem. A store that failed (after
  // its retries) says nothing about OUTPUT: that error goes on, and validate fails as a job.
  template <typename F>
  bool guarded(F&& f) {
    try {
      f();
      return true;
    } catch (const Error& e) {
      if (e.is_storage()) throw;
      problem(e.what());
      return false;
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {  // malformed JSON or numbers too, not only orchard::Error
      problem(e.what());
      return false;
    }
  }

  void manifest() {
    guarded([&] {
      const auto m = dataset::load_manifest(out);
      for (const auto& item : m.items) label_of[item.path] = item.label;
      r.counts.inputs = static_cast<std::int64_t>(m.items.size());
      expected_parts = m.num_shards();
    });
  }

  int expected_parts = -1;

  void parts_complete(const std::string& folder) {
    if (expected_parts < 0) return;
    for (int s = 0; s < expected_parts; ++s) {
      const auto f = out.child(folder).child(layout::part_name(s));
      if (!storage::exists(f))
        problem(f.display() + " is missing (shard " + std::to_string(s) +
                "); rerun `orchard featurize` (or `orchard run`) on this OUTPUT to redo that shard");
    }
  }

  void count_path(const std::string& path, const std::string& file) {
    if (!label_of.count(path)) row_problem(file, "are not inputs of this run's manifest", path);
    if (++seen[path] == 2) row_problem(file, "repeat a path already in features/ or errors/", path);
  }

  void features() {
    parts_complete("features");
    for (const auto& part : table::list_parts(layout::features_dir(out))) {
      std::int64_t first = 0;
      guarded([&] {
        table::for_each_batch(part, "features", kDim, kBatchRows, [&](const table::VectorRows& rows) {
          for (std::size_t i = 0; i < rows.size(); ++i) {
            const std::string where = "row " + std::to_string(first + static_cast<std::int64_t>(i)) + " " + rows.paths[i];
            if (auto why = table::vector_problem(rows.values.data() + i * kDim, kDim); !why.empty())
              row_problem(part.display(), "hold " + why, where);
            count_path(rows.paths[i], part.display());
            embedded[rows.paths[i]] = 1;
            auto it = label_of.find(rows.paths[i]);
            if (it != label_of.end() && it->second != rows.labels[i])
              row_problem(part.display(), "have a label other than their folder's", where + " '" + rows.labels[i] + "'");
          }
          first += static_cast<std::int64_t>(rows.size());
        });
        r.counts.embedded += first;
      });
    }
  }

  void errors() {
    parts_complete("errors");
    for (const auto& part : table::list_parts(layout::errors_dir(out))) {
      guarded([&] {
        auto rows = table::read_errors(part);
        for (std::size_t i = 0; i < rows.paths.size(); ++i) {
          count_path(rows.paths[i], part.display());
          if (rows.errors[i].empty()) row_problem(part.display(), "have an empty error message", rows.paths[i]);
        }
        r.counts.errors += static_cast<std::int64_t>(rows.paths.size());
      });
    }
    std::int64_t missing = 0;
    std::string example;
    for (const auto& [path, label] : label_of)
      if (!seen.count(path)) { if (!missing++) example = path; }
    if (missing)
      problem(out.display() + ": " + std::to_string(missing) + " inputs are in neither features/ nor errors/ (e.g. " +
              example + "); rerun `orchard featurize` on this OUTPUT");
  }

  void pca() {
    const auto model_file = layout::pca_model(out);
    if (!storage::exists(model_file)) {
      if (storage::exists(layout::pca_features_dir(out))) problem(model_file.display() + " is missing but pca_features/ exists; rerun `orchard pca`");
      return;
    }
    guarded([&] {
      const auto m = pca::read_model(model_file);
      r.counts.k = m.k;
      const auto n = m.dim > 0 ? m.components.size() / m.dim : 0;
      if (static_cast<int>(n) != m.k || m.dim != kDim)
        problem(model_file.display() + ": " + std::to_string(n) + " components of " + std::to_string(m.dim) +
                " values but k = " + std::to_string(m.k) + " and features have " + std::to_string(kDim));
    });
    const auto csv = layout::explained_variance(out);
    guarded([&] {
      auto buf = storage::read_file(csv);
      std::istringstream in(buf->ToString());
      std::string line;
      std::getline(in, line);
      if (line != "component,explained_variance_ratio,cumulative") problem(csv.display() + ": unexpected header '" + line + "'");
      int n = 0;
      while (std::getline(in, line)) if (!line.empty()) ++n;
      if (n != kDim) problem(csv.display() + ": " + std::to_string(n) + " rows, expected " + std::to_string(kDim));
    });
    std::unordered_map<std::string, int> pca_seen;
    for (const auto& part : table::list_parts(layout::pca_features_dir(out))) {
      guarded([&] {
        table::for_each_batch(part, "pca", r.counts.k, kBatchRows, [&](const table::VectorRows& rows) {
          for (std::size_t i = 0; i < rows.size(); ++i) {
            for (int j = 0; j < rows.dim; ++j)
              if (!std::isfinite(rows.values[i * rows.dim + j])) { row_problem(part.display(), "have non-finite values", rows.paths[i]); break; }
            if (!embedded.count(rows.paths[i])) row_problem(part.display(), "are not in features/", rows.paths[i]);
            if (++pca_seen[rows.paths[i]] == 2) row_problem(part.display(), "repeat a path in pca_features/", rows.paths[i]);
          }
          r.counts.pca_rows += static_cast<std::int64_t>(rows.size());
        });
      });
    }
    if (r.counts.pca_rows != r.counts.embedded)
      problem(layout::pca_features_dir(out).path + ": " + std::to_string(r.counts.pca_rows) + " rows but features/ has " +
              std::to_string(r.counts.embedded) + "; rerun `orchard pca`");
  }

  void success() {
    const auto file = layout::success(out);
    if (!storage::exists(file)) return;
    guarded([&] {
      auto j = nlohmann::json::parse(storage::read_file(file)->ToString());
      auto expect = [&](const char* key, std::int64_t actual) {
        if (!j.contains("counts") || !j["counts"].contains(key)) { problem(file.display() + ": no counts." + key); return; }
        if (j["counts"][key].get<std::int64_t>() != actual)
          problem(file.display() + ": counts." + key + " = " + std::to_string(j["counts"][key].get<std::int64_t>()) +
                  " but OUTPUT has " + std::to_string(actual));
      };
      expect("inputs", r.counts.inputs);
      expect("embedded", r.counts.embedded);
      expect("errors", r.counts.errors);
      expect("k", r.counts.k);
    });
  }
};

}  // namespace

Result check(const storage::Location& output) {
  Checker c(output);
  c.manifest();
  c.features();
  c.errors();
  c.pca();
  c.success();
  c.flush_row_problems();
  return c.r;
}

}  // namespace orchard::validate
