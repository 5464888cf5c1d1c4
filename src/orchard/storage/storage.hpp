#pragma once
// All file access goes through arrow::fs, so a local folder and (later) s3://bucket/prefix are the
// same to every stage.
#include <arrow/filesystem/filesystem.h>
#include <arrow/io/interfaces.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace orchard::storage {

// A filesystem and a path inside it.
struct Location {
  std::shared_ptr<arrow::fs::FileSystem> fs;
  std::string path;  // as the filesystem names it (absolute for local files)
  // This location joined with a relative name.
  Location child(const std::string& name) const;
};

// Opens a local path (relative ones made absolute) or a URI. Throws orchard::Error naming it.
Location open(const std::string& uri_or_path);

// Files under root, recursively, whose file name matches glob (fnmatch, case-sensitive, as
// Spark's pathGlobFilter), sorted by path. Throws when root is not a folder.
std::vector<std::string> list_files(const Location& root, const std::string& glob);

// The whole content of a file. Throws orchard::Error naming the path.
std::shared_ptr<arrow::Buffer> read_file(const Location& file);

// True when something exists at loc; an unreadable location counts as absent (resume then redoes
// that shard, which is safe).
bool exists(const Location& loc);

// Creates the folder (and parents) if missing.
void make_dirs(const Location& dir);

// Writes a file so that readers only ever see it whole: into a temporary name, then renamed (on
// an object store a single PUT is already atomic). write gets the open stream.
void write_atomic(const Location& file,
                  const std::function<void(const std::shared_ptr<arrow::io::OutputStream>&)>& write);

// Writes a small text file atomically.
void write_text(const Location& file, const std::string& text);

// Throws orchard::Error with context when st is not OK.
void check(const arrow::Status& st, const std::string& context);

// Unwraps a Result or throws orchard::Error with context.
template <typename T>
T value_or_throw(arrow::Result<T> r, const std::string& context) {
  check(r.status(), context);
  return std::move(r).ValueUnsafe();
}

}  // namespace orchard::storage
