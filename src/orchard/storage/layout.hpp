#pragma once
// Every name under OUTPUT, built and parsed here and nowhere else (as LevelDB's db/filename.h).
//
//   OUTPUT/_manifest.parquet                the shard plan a rerun resumes
//   OUTPUT/features/part-NNNNN.parquet      one per shard: path, label, features
//   OUTPUT/errors/part-NNNNN.parquet        one per shard: path, error
//   OUTPUT/moments/part-NNNNN.parquet       PCA moments of a group of parts (distributed runs)
//   OUTPUT/pca/explained_variance.csv, pca/model.parquet
//   OUTPUT/pca_features/part-NNNNN.parquet  one per features part
//   OUTPUT/report/index.html
//   OUTPUT/_featurize.json, _pca.json       each stage's counts, timings, options
//   OUTPUT/_SUCCESS                         written last
//   NAME.tmp-PID-N                          a local part being written (renamed when whole)
#include <cstdio>
#include <optional>
#include <string>

#include "orchard/storage/storage.hpp"

namespace orchard::layout {

inline storage::Location manifest(const storage::Location& out) { return out.child("_manifest.parquet"); }
inline storage::Location features_dir(const storage::Location& out) { return out.child("features"); }
inline storage::Location errors_dir(const storage::Location& out) { return out.child("errors"); }
inline storage::Location moments_dir(const storage::Location& out) { return out.child("moments"); }
inline storage::Location pca_dir(const storage::Location& out) { return out.child("pca"); }
inline storage::Location pca_model(const storage::Location& out) { return pca_dir(out).child("model.parquet"); }
inline storage::Location explained_variance(const storage::Location& out) {
  return pca_dir(out).child("explained_variance.csv");
}
inline storage::Location pca_features_dir(const storage::Location& out) { return out.child("pca_features"); }
inline storage::Location report_dir(const storage::Location& out) { return out.child("report"); }
inline storage::Location report_index(const storage::Location& out) { return report_dir(out).child("index.html"); }
inline storage::Location featurize_json(const storage::Location& out) { return out.child("_featurize.json"); }
inline storage::Location pca_json(const storage::Location& out) { return out.child("_pca.json"); }
inline storage::Location success(const storage::Location& out) { return out.child("_SUCCESS"); }

// Part file name for shard i: "part-00012.parquet".
inline std::string part_name(int shard) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "part-%05d.parquet", shard);
  return buf;
}

// The shard number of a part file name, or nothing when name is not "part-<digits>.parquet".
inline std::optional<int> parse_part(const std::string& name) {
  const std::string pre = "part-", suf = ".parquet";
  if (name.size() <= pre.size() + suf.size() || name.rfind(pre, 0) != 0 ||
      name.compare(name.size() - suf.size(), suf.size(), suf) != 0)
    return std::nullopt;
  const std::string digits = name.substr(pre.size(), name.size() - pre.size() - suf.size());
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoi(digits);
}

// features/part-NNNNN.parquet, errors/..., pca_features/... of one shard.
inline storage::Location feature_part(const storage::Location& out, int shard) {
  return features_dir(out).child(part_name(shard));
}
inline storage::Location error_part(const storage::Location& out, int shard) {
  return errors_dir(out).child(part_name(shard));
}
inline storage::Location pca_part(const storage::Location& out, int shard) {
  return pca_features_dir(out).child(part_name(shard));
}

// A temporary name for a local file being written: final + ".tmp-PID-N".
inline constexpr const char* kTemporaryMark = ".tmp-";
inline std::string temporary_name(const std::string& final_path, long pid, int n) {
  return final_path + kTemporaryMark + std::to_string(pid) + "-" + std::to_string(n);
}
// True for a name made by temporary_name (being written, or left behind by a killed run).
inline bool is_temporary(const std::string& name) { return name.find(kTemporaryMark) != std::string::npos; }
// The shard of a temporary part name ("part-00007.parquet.tmp-PID-N" -> 7), or nothing.
inline std::optional<int> parse_temporary_part(const std::string& name) {
  const auto at = name.find(kTemporaryMark);
  return at == std::string::npos ? std::nullopt : parse_part(name.substr(0, at));
}

}  // namespace orchard::layout
