#include "orchard/storage/storage.hpp"

#include <fnmatch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>

#include "orchard/error.hpp"

namespace orchard::storage {

void check(const arrow::Status& st, const std::string& context) {
  if (!st.ok()) throw Error(context + ": " + st.ToString());
}

Location Location::child(const std::string& name) const {
  return {fs, path.empty() ? name : (path.back() == '/' ? path + name : path + "/" + name)};
}

Location open(const std::string& uri_or_path) {
  std::string target = uri_or_path;
  if (target.find("://") == std::string::npos)
    target = std::filesystem::absolute(target).lexically_normal().string();
  while (target.size() > 1 && target.back() == '/') target.pop_back();
  std::string path;
  auto fs = value_or_throw(arrow::fs::FileSystemFromUriOrPath(target, &path),
                           uri_or_path + ": cannot open (a local path or a supported URI is expected)");
  return {fs, path};
}

std::vector<std::string> list_files(const Location& root, const std::string& glob) {
  auto info = value_or_throw(root.fs->GetFileInfo(root.path), root.path + ": cannot read");
  if (info.type() != arrow::fs::FileType::Directory)
    throw Error(root.path + ": not a folder; INPUT is a folder of images (one subfolder per label)");
  arrow::fs::FileSelector sel;
  sel.base_dir = root.path;
  sel.recursive = true;
  auto infos = value_or_throw(root.fs->GetFileInfo(sel), root.path + ": cannot list");
  std::vector<std::string> out;
  for (const auto& f : infos) {
    if (f.type() != arrow::fs::FileType::File) continue;
    if (fnmatch(glob.c_str(), f.base_name().c_str(), 0) == 0) out.push_back(f.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::shared_ptr<arrow::Buffer> read_file(const Location& file) {
  auto in = value_or_throw(file.fs->OpenInputFile(file.path), file.path + ": cannot open");
  return value_or_throw(in->Read(value_or_throw(in->GetSize(), file.path + ": cannot stat")), file.path + ": cannot read");
}

bool exists(const Location& loc) {
  auto info = loc.fs->GetFileInfo(loc.path);
  return info.ok() && info->type() != arrow::fs::FileType::NotFound;
}

void make_dirs(const Location& dir) {
  check(dir.fs->CreateDir(dir.path, true), dir.path + ": cannot create the folder");
}

void write_atomic(const Location& file,
                  const std::function<void(const std::shared_ptr<arrow::io::OutputStream>&)>& write) {
  const bool object_store = file.fs->type_name() != "local";
  static std::atomic<int> counter{0};
  const std::string tmp = object_store ? file.path
                                       : file.path + ".tmp-" + std::to_string(::getpid()) + "-" +
                                             std::to_string(counter++);
  auto out = value_or_throw(file.fs->OpenOutputStream(tmp), file.path + ": cannot write");
  try {
    write(out);
  } catch (...) {
    (void)out->Abort();  // an object store must not publish half a file under the final name
    if (!object_store) (void)file.fs->DeleteFile(tmp);
    throw;
  }
  check(out->Close(), file.path + ": cannot finish writing");
  if (!object_store) check(file.fs->Move(tmp, file.path), file.path + ": cannot commit");
}

void write_text(const Location& file, const std::string& text) {
  write_atomic(file, [&](const auto& out) { check(out->Write(text), file.path + ": cannot write"); });
}

}  // namespace orchard::storage
