#pragma once
// Every name under OUTPUT, built and parsed here and nowhere else (as LevelDB's db/filename.h).
//
//   OUTPUT/_manifest.parquet                the shard plan a rerun resumes
//   OUTPUT/features/part-NNNNN.parquet      one per shard: path, label, features
//   OUTPUT/errors/part-NNNNN.parquet        one per shard: path, error
//   OUTPUT/moments/part-NNNNN.parquet       PCA moments of a group of parts starting at shard NNNNN
//                                           (distributed runs; `orchard fit` merges then deletes them)
//   OUTPUT/pca/explained_variance.csv, pca/model.parquet
//   OUTPUT/pca_features/part-NNNNN.parquet  one per features part
//   OUTPUT/report/index.html
//   OUTPUT/classifier/model.parquet, classifier/metrics.json   `orchard train` (TRAINED = such an OUTPUT)
//   OUTPUT/predictions/part-NNNNN.parquet   `orchard classify`: one per shard: path, label, top_labels,
//                                           top_probabilities (errors/ as featurize)
//   OUTPUT/_classify.json                   the classifier a classify OUTPUT uses (written first), then its counts
//   OUTPUT/_featurize.json, _pca.json       each stage's counts, timings, options
//   OUTPUT/_SUCCESS                         written last
//   NAME.tmp-HOST-PID-N                     a local file being written (renamed when whole)
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

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
inline storage::Location classifier_dir(const storage::Location& out) { return out.child("classifier"); }
inline storage::Location classifier_model(const storage::Location& out) {
  return classifier_dir(out).child("model.parquet");
}
inline storage::Location classifier_metrics(const storage::Location& out) {
  return classifier_dir(out).child("metrics.json");
}
inline storage::Location predictions_dir(const storage::Location& out) { return out.child("predictions"); }
inline storage::Location classify_json(const storage::Location& out) { return out.child("_classify.json"); }
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
inline storage::Location prediction_part(const storage::Location& out, int shard) {
  return predictions_dir(out).child(part_name(shard));
}
// moments/part-NNNNN.parquet: the moments of a group of features parts whose first shard is NNNNN.
inline storage::Location moments_part(const storage::Location& out, int first_shard) {
  return moments_dir(out).child(part_name(first_shard));
}

// A temporary name for a local file being written by process pid on host: final + ".tmp-HOST-PID-N",
// unique per writer even on a folder that several machines share (Spark attempts, NFS).
inline constexpr const char* kTemporaryMark = ".tmp-";
inline std::string temporary_name(const std::string& final_path, const std::string& host, long pid, int n) {
  return final_path + kTemporaryMark + host + "-" + std::to_string(pid) + "-" + std::to_string(n);
}
// True for a name made by temporary_name (being written, or left behind by a killed run).
inline bool is_temporary(const std::string& name) { return name.find(kTemporaryMark) != std::string::npos; }

// The shard of a temporary part name in any format this or an earlier version made
// ("part-00007.parquet.tmp-..." -> 7), or nothing.
inline std::optional<int> temporary_part_shard(const std::string& name) {
  const auto at = name.find(kTemporaryMark);
  return at == std::string::npos ? std::nullopt : parse_part(name.substr(0, at));
}

// What a temporary name says of its writer.
struct TemporaryWriter {
  int shard = -1;  // the part's shard, -1 when it is not a part ("_SUCCESS.tmp-...")
  std::string host;
  long pid = -1;
};
// The writer of a temporary name ("part-00007.parquet.tmp-node-1-4242-0" -> 7, "node-1", 4242),
// or nothing when name is not one temporary_name makes.
inline std::optional<TemporaryWriter> parse_temporary(const std::string& name) {
  const auto at = name.find(kTemporaryMark);
  if (at == std::string::npos) return std::nullopt;
  const std::string rest = name.substr(at + std::char_traits<char>::length(kTemporaryMark));
  const auto n_dash = rest.rfind('-');
  const auto pid_dash = n_dash == std::string::npos || n_dash == 0 ? std::string::npos : rest.rfind('-', n_dash - 1);
  if (pid_dash == std::string::npos || pid_dash == 0) return std::nullopt;
  const std::string pid = rest.substr(pid_dash + 1, n_dash - pid_dash - 1), n = rest.substr(n_dash + 1);
  for (const auto& digits : {pid, n})
    if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
  TemporaryWriter w;
  w.shard = parse_part(name.substr(0, at)).value_or(-1);
  w.host = rest.substr(0, pid_dash);
  w.pid = std::stol(pid);
  return w;
}

}  // namespace orchard::layout
