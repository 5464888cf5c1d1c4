#pragma once
// All file access goes through arrow::fs, so a local folder and s3://bucket/prefix are the same to
// every stage. S3 is configured the AWS way (default credential chain, AWS_REGION /
// AWS_DEFAULT_REGION / the profile, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL); keys are never
// printed or stored. Failures carry their kind (orchard::Error): kStorage for the store
// (retried here a bounded number of times), kNotFound for what is missing.
#include <arrow/buffer.h>
#include <arrow/filesystem/filesystem.h>
#include <arrow/io/interfaces.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace orchard::storage {

// A filesystem and a path inside it.
struct Location {
  std::shared_ptr<arrow::fs::FileSystem> fs;
  std::string path;    // as the filesystem names it: "/abs/path" locally, "bucket/key" on S3
  std::string scheme;  // "" for the local filesystem, "s3" for S3
  // This location joined with a relative name.
  Location child(const std::string& name) const;
  // The name users see and that `path` columns hold: "s3://bucket/key", or the absolute local path.
  std::string display() const;
  // The URI with its scheme: "s3://bucket/key" or "file:///abs/path" (what the manifest records).
  std::string uri() const;
  // Another location on the same filesystem, from a name as display() gives it.
  Location at(const std::string& display_name) const;
  // True on an object store (S3): no rename, no folders, publish = one PUT.
  bool object_store() const { return !scheme.empty(); }
};

// A file found by a listing.
struct FileEntry {
  std::string name;   // as Location::display() gives it
  std::int64_t size;  // bytes
};

// Opens a local path (relative ones made absolute), a file:// URI or s3://[KEY:SECRET@]bucket/prefix.
// Throws orchard::Error naming it (keys redacted) and saying what to configure.
Location open(const std::string& uri_or_path);

// uri without any KEY:SECRET@ it carries ("s3://***@bucket/x"), for printing and storing.
std::string redact(const std::string& uri);

// text with every secret Orchard knows (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, keys given in
// URIs) replaced by "***". Every message that leaves the process goes through it.
std::string scrub(const std::string& text);

// Files under root, recursively (object-store listings paginated), whose file name matches glob
// (fnmatch, case-sensitive, as Spark's pathGlobFilter), sorted by name. Throws when root is not
// a folder / prefix, or kStorage when the listing fails.
std::vector<FileEntry> list_files(const Location& root, const std::string& glob);

// The files directly in folder (empty when it does not exist), sorted by path.
std::vector<arrow::fs::FileInfo> list_dir(const Location& folder);

// The whole content of a file; size >= 0 (from a listing) saves an object store's HEAD request.
// Retried on store failures; throws kNotFound / kStorage naming the file, and kBadInput with
// changed_since_listing's reason when a read of the listed size went wrong because its size changed.
std::shared_ptr<arrow::Buffer> read_file(const Location& file, std::int64_t size = -1);

// How a listed file is no longer what the listing said (reason "changed since planning: it no
// longer exists" or "...: listed with N bytes, now M ..."; listed < 0 checks existence only), or
// nothing when it still is. One HEAD, retried; a check that cannot be made throws kStorage.
struct Change {
  bool gone = false;   // it no longer exists
  std::string reason;  // for an error row
};
std::optional<Change> changed_since_listing(const Location& file, std::int64_t listed);

// What the store says of a file now: size, modification time (one HEAD on an object store).
// Throws kNotFound / kStorage.
arrow::fs::FileInfo stat(const Location& file);


// True when something exists at loc, false when it certainly does not. A check that could not be
// made throws kStorage: it is never taken for "absent".
bool exists(const Location& loc);

// Creates the folder (and parents) if missing; nothing to do on an object store.
void make_dirs(const Location& dir);

// Deletes a file; a file already gone is fine. Throws kStorage when the store refuses.
void remove(const Location& file);

// Deletes a folder (an object store: every object under the prefix, and its marker); one already
// gone is fine. Throws kStorage when the store refuses.
void remove_dir(const Location& dir);

// Writes a file so that readers only ever see it whole: one PUT of the final key on an object
// store (small files in one request), a temporary name then a rename on a local disk. A write
// that fails is aborted (nothing appears under the final name) and retried when the store
// failed; write gets the open stream and may be called again.
void write_atomic(const Location& file,
                  const std::function<void(const std::shared_ptr<arrow::io::OutputStream>&)>& write);

// This machine's host name (as it appears in temporary names).
std::string host_name();

// Writes a small text file atomically.
void write_text(const Location& file, const std::string& text);

// Runs f, retrying it with exponential backoff while it throws a transient kStorage error, at most
// $ORCHARD_STORAGE_ATTEMPTS times (default 4); the last error names what and the attempts.
void with_retries(const std::string& what, const std::function<void()>& f);

// Throws orchard::Error with context when st is not OK: kNotFound for a missing path, kStorage for
// an I/O failure (with a hint: credentials, bucket, region, endpoint), kJob otherwise.
void check(const arrow::Status& st, const std::string& context);

// Unwraps a Result or throws as check() does.
template <typename T>
T value_or_throw(arrow::Result<T> r, const std::string& context) {
  check(r.status(), context);
  return std::move(r).ValueUnsafe();
}

// Finalizes S3 if it was used; main() calls it before exiting (Arrow requires it).
void shutdown();

}  // namespace orchard::storage
