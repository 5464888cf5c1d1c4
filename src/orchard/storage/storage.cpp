#include "orchard/storage/storage.hpp"

#include <arrow/buffer.h>
#include <arrow/filesystem/localfs.h>
#include <fnmatch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <thread>

#include "orchard/error.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/s3.hpp"

namespace orchard::storage {
namespace {

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// Why a store refused, read from Arrow's / the AWS SDK's message.
enum class Cause { kOther, kDenied, kNoBucket, kWrongRegion, kUnreachable };

Cause cause_of(const std::string& m) {
  if (contains(m, "ACCESS_DENIED") || contains(m, "InvalidAccessKeyId") || contains(m, "SignatureDoesNotMatch") ||
      contains(m, "HTTP status 403") || contains(m, "INVALID_ACCESS_KEY_ID") || contains(m, "SIGNATURE_DOES_NOT_MATCH"))
    return Cause::kDenied;
  if (contains(m, "NO_SUCH_BUCKET") || contains(m, "NoSuchBucket") || contains(m, "bucket does not exist") ||
      contains(m, "Bucket does not exist"))
    return Cause::kNoBucket;
  if (contains(m, "PermanentRedirect") || contains(m, "HTTP status 301") || contains(m, "wrong region"))
    return Cause::kWrongRegion;
  if (contains(m, "NETWORK_CONNECTION") || contains(m, "curlCode") || contains(m, "Couldn't connect"))
    return Cause::kUnreachable;
  return Cause::kOther;
}

// What to do about it.
std::string hint(Cause c) {
  switch (c) {
    case Cause::kDenied:
      return " (access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role, "
             "and that it may read INPUT and write OUTPUT)";
    case Cause::kNoBucket: return " (no such bucket: create it, or fix the bucket name in the URI)";
    case Cause::kWrongRegion: return " (the bucket is in another region: set AWS_REGION to the bucket's region)";
    case Cause::kUnreachable: return " (the store did not answer: check AWS_ENDPOINT_URL_S3 / the network; rerun to resume)";
    case Cause::kOther: break;
  }
  return "";
}

// A failure worth another try: not a refusal that will be given again.
bool transient(const Error& e) {
  const std::string m = e.what();
  const Cause c = cause_of(m);
  return e.is_storage() && !e.retries_spent() && c != Cause::kDenied && c != Cause::kNoBucket && c != Cause::kWrongRegion &&
         !contains(m, "HTTP status 404");
}

int storage_attempts() {
  const char* v = std::getenv("ORCHARD_STORAGE_ATTEMPTS");
  const int n = v ? std::atoi(v) : 0;
  return n > 0 ? n : 4;
}

}  // namespace

void check(const arrow::Status& st, const std::string& context) {
  if (st.ok()) return;
  const std::string m = st.ToString();
  const std::string what = scrub(context + ": " + m + hint(cause_of(m)));
  if (contains(m, "Path does not exist") || contains(m, "No such file or directory") || contains(m, "NO_SUCH_KEY"))
    throw Error::not_found(what);
  if (st.IsIOError()) throw Error::storage(what);
  throw Error(what);
}

void with_retries(const std::string& what, const std::function<void()>& f) {
  const int attempts = storage_attempts();
  auto backoff = std::chrono::milliseconds(200);
  for (int attempt = 1;; ++attempt) {
    try {
      f();
      return;
    } catch (const Error& e) {
      if (!transient(e)) throw;
      if (attempt >= attempts)
        throw Error::storage_given_up(std::string(e.what()) + " [gave up on " + what + " after " +
                                      std::to_string(attempts) + " attempts; rerun to resume once the store recovers]");
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

Location Location::child(const std::string& name) const {
  return {fs, path.empty() ? name : (path.back() == '/' ? path + name : path + "/" + name), scheme};
}

std::string Location::display() const { return scheme.empty() ? path : scheme + "://" + path; }

std::string Location::uri() const { return scheme.empty() ? "file://" + path : display(); }

Location Location::at(const std::string& display_name) const {
  const std::string prefix = scheme.empty() ? "" : scheme + "://";
  if (!prefix.empty() && display_name.rfind(prefix, 0) == 0) return {fs, display_name.substr(prefix.size()), scheme};
  return {fs, display_name, scheme};
}

std::string redact(const std::string& uri) {
  const auto sep = uri.find("://");
  if (sep == std::string::npos) return uri;
  const auto start = sep + 3;
  const auto slash = uri.find('/', start);
  auto at = uri.rfind('@', slash == std::string::npos ? std::string::npos : slash);
  if (at == std::string::npos || at < start) {
    // KEY:SECRET@ with a raw '/' in the secret (AWS secrets often hold one): from an access key
    // and its colon to the next '@' (neither key holds one), on one line.
    const auto colon = uri.find(':', start);
    if (colon == std::string::npos || colon == start || uri.find_first_of("/@ \t\n", start) < colon) return uri;
    at = uri.find('@', colon);
    if (at == std::string::npos || uri.find_first_of(" \t\n", colon) < at) return uri;
  }
  return uri.substr(0, start) + "***@" + uri.substr(at + 1);
}

std::string scrub(const std::string& text) {
  std::vector<std::string> secrets = s3::uri_secrets();
  for (const char* v : {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
    if (const char* s = std::getenv(v); s && std::string(s).size() >= 4) secrets.push_back(s);
  std::string out = redact(text);
  for (const auto& s : secrets)
    for (std::size_t pos; (pos = out.find(s)) != std::string::npos;) out.replace(pos, s.size(), "***");
  return out;
}

Location open(const std::string& uri_or_path) {
  if (uri_or_path.rfind("s3://", 0) == 0) {
    const auto u = s3::parse(uri_or_path);
    return {s3::filesystem(u), u.path(), "s3"};
  }
  std::string target = uri_or_path;
  if (target.rfind("file://", 0) == 0) target = target.substr(7);
  if (target.find("://") != std::string::npos)
    throw Error(redact(uri_or_path) + ": unsupported location; give a local path, file:///PATH or s3://BUCKET/PREFIX");
  target = std::filesystem::absolute(target).lexically_normal().string();
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  static const auto local = std::make_shared<arrow::fs::LocalFileSystem>();
  return {local, target, ""};
}

std::vector<FileEntry> list_files(const Location& root, const std::string& glob) {
  std::vector<FileEntry> out;
  with_retries("listing " + root.display(), [&] {
    out.clear();
    auto info = value_or_throw(root.fs->GetFileInfo(root.path), root.display() + ": cannot read");
    if (info.type() == arrow::fs::FileType::NotFound && root.object_store()) {  // S3 lists a missing bucket as empty
      const Location bucket{root.fs, root.path.substr(0, root.path.find('/')), root.scheme};
      if (value_or_throw(root.fs->GetFileInfo(bucket.path), bucket.display() + ": cannot read").type() ==
          arrow::fs::FileType::NotFound)
        throw Error(bucket.display() + ": no such bucket: create it, or fix the bucket name in INPUT");
    }
    if (info.type() != arrow::fs::FileType::Directory)
      throw Error(root.display() + (root.object_store() ? ": no object under this prefix" : ": not a folder") +
                  "; INPUT is a folder or s3:// prefix of images (one subfolder per label)");
    arrow::fs::FileSelector sel;
    sel.base_dir = root.path;
    sel.recursive = true;
    auto infos = value_or_throw(root.fs->GetFileInfo(sel), root.display() + ": cannot list");
    for (const auto& f : infos) {
      if (f.type() != arrow::fs::FileType::File) continue;
      if (fnmatch(glob.c_str(), f.base_name().c_str(), 0) == 0) out.push_back({Location{root.fs, f.path(), root.scheme}.display(), f.size()});
    }
  });
  std::sort(out.begin(), out.end(), [](const FileEntry& a, const FileEntry& b) { return a.name < b.name; });
  return out;
}

std::vector<arrow::fs::FileInfo> list_dir(const Location& folder) {
  std::vector<arrow::fs::FileInfo> out;
  with_retries("listing " + folder.display(), [&] {
    arrow::fs::FileSelector sel;
    sel.base_dir = folder.path;
    sel.allow_not_found = true;
    out = value_or_throw(folder.fs->GetFileInfo(sel), folder.display() + ": cannot list");
  });
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path() < b.path(); });
  return out;
}

std::optional<Change> changed_since_listing(const Location& file, std::int64_t listed) {
  arrow::fs::FileInfo info;
  with_retries("checking " + file.display(), [&] {
    info = value_or_throw(file.fs->GetFileInfo(file.path), file.display() + ": could not check it");
  });
  if (info.type() == arrow::fs::FileType::NotFound) return Change{true, "changed since planning: it no longer exists"};
  if (listed >= 0 && info.size() != listed)
    return Change{false, "changed since planning: listed with " + std::to_string(listed) + " bytes, now " +
                             std::to_string(info.size()) + "; run on a new OUTPUT to embed its current content"};
  return std::nullopt;
}

namespace {
// After a read of the listed size went wrong: kNotFound naming the file when it is gone, kBadInput
// when it has another size; nothing when it is as listed (the store or the connection failed).
void throw_if_changed(const Location& file, std::int64_t listed) {
  const auto c = changed_since_listing(file, listed);
  if (!c) return;
  if (c->gone) throw Error::not_found(file.display() + ": cannot read: it no longer exists (it was listed)");
  throw Error::bad_input(c->reason);
}
}  // namespace

std::shared_ptr<arrow::Buffer> read_file(const Location& file, std::int64_t size) {
  std::shared_ptr<arrow::Buffer> buf;
  with_retries("reading " + file.display(), [&] {
    std::shared_ptr<arrow::io::RandomAccessFile> in;
    // A listed local file is asked for one byte more than listed: getting it means the file grew
    // since it was listed. (Not on S3: Arrow's ranged GET does not shorten its buffer to what came
    // back, so there a grown object is found when its listed bytes do not decode: featurize asks.)
    const std::int64_t ask = size > 0 && !file.object_store() ? size + 1 : size;
    if (size >= 0) {
      arrow::fs::FileInfo info(file.path, arrow::fs::FileType::File);
      info.set_size(ask);
      in = value_or_throw(file.fs->OpenInputFile(info), file.display() + ": cannot open");
    } else {
      in = value_or_throw(file.fs->OpenInputFile(file.path), file.display() + ": cannot open");
    }
    const auto n = size >= 0 ? size : value_or_throw(in->GetSize(), file.display() + ": cannot stat");
    try {
      buf = value_or_throw(in->ReadAt(0, size >= 0 ? ask : n), file.display() + ": cannot read");
    } catch (const Error& e) {
      // Without the HEAD, a GET into a buffer of the listed size can lose the store's answer (a
      // 404 or 403 body longer than the buffer reads as "Failed to flush response stream"): ask.
      if (size < 0 || e.is_not_found()) throw;
      throw_if_changed(file, size);
      throw;
    }
    if (buf->size() != n) {
      if (size >= 0) throw_if_changed(file, size);
      throw Error::storage(file.display() + ": read " + std::to_string(buf->size()) + " of " + std::to_string(n) +
                           " bytes (the object changed or the connection broke)");
    }
  });
  return buf;
}

arrow::fs::FileInfo stat(const Location& file) {
  arrow::fs::FileInfo info;
  with_retries("checking " + file.display(), [&] {
    info = value_or_throw(file.fs->GetFileInfo(file.path), file.display() + ": cannot check it");
    if (info.type() == arrow::fs::FileType::NotFound) throw Error::not_found(file.display() + ": does not exist");
  });
  return info;
}


bool exists(const Location& loc) {
  bool found = false;
  with_retries("checking " + loc.display(), [&] {
    auto info = value_or_throw(loc.fs->GetFileInfo(loc.path), loc.display() + ": could not check whether it exists");
    found = info.type() != arrow::fs::FileType::NotFound;
  });
  return found;
}

void make_dirs(const Location& dir) {
  if (dir.object_store()) return;  // keys need no folders; CreateDir on a missing bucket would create it
  check(dir.fs->CreateDir(dir.path, true), dir.display() + ": cannot create the folder");
}

namespace {
// check() for a deletion: a path already gone is fine.
void check_deleted(const arrow::Status& st, const std::string& context) {
  if (st.ok()) return;
  try {
    check(st, context);
  } catch (const Error& e) {
    if (!e.is_not_found()) throw;
  }
}
}  // namespace

void remove(const Location& file) {
  with_retries("deleting " + file.display(),
               [&] { check_deleted(file.fs->DeleteFile(file.path), file.display() + ": cannot delete"); });
}

void remove_dir(const Location& dir) {
  with_retries("deleting " + dir.display(),
               [&] { check_deleted(dir.fs->DeleteDir(dir.path), dir.display() + ": cannot delete"); });
}

std::string host_name() {
  static const std::string name = [] {
    char buf[256] = {0};
    if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return std::string("localhost");
    std::string n = buf;
    for (char& c : n)
      if (c == '/' || c == '\\' || c == ' ') c = '_';  // a file-name part
    return n;
  }();
  return name;
}

void write_atomic(const Location& file,
                  const std::function<void(const std::shared_ptr<arrow::io::OutputStream>&)>& write) {
  static std::atomic<int> counter{0};
  with_retries("writing " + file.display(), [&] {
    const std::string target =
        file.object_store() ? file.path : layout::temporary_name(file.path, host_name(), ::getpid(), counter++);
    auto out = value_or_throw(file.fs->OpenOutputStream(target), file.display() + ": cannot write");
    try {
      write(out);
      check(out->Close(), file.display() + ": cannot finish writing");
    } catch (...) {
      (void)out->Abort();  // nothing may appear under the final name
      if (!file.object_store()) (void)file.fs->DeleteFile(target);
      throw;
    }
    if (!file.object_store()) {
      const auto st = file.fs->Move(target, file.path);
      if (!st.ok()) (void)file.fs->DeleteFile(target);  // no temporary left behind either
      check(st, file.display() + ": cannot commit");
    }
  });
}

void write_text(const Location& file, const std::string& text) {
  write_atomic(file, [&](const auto& out) { check(out->Write(text), file.display() + ": cannot write"); });
}

void shutdown() { s3::finalize(); }

}  // namespace orchard::storage
