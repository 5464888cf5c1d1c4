// orchard-pixels: decode + resize images exactly as the pipeline does, for parity checks with
// Pillow.
//
//   orchard-pixels OUT_DIR FILE...     (a FILE of "-" reads more paths from stdin, one a line)
//
// For input number i (0-based, in order) writes OUT_DIR/<i>.rgb, the 224x224x3 RGB bytes after
// decode_to_rgb + resize_bicubic, or prints "ERROR <i> <path>: <message>" on stdout. Exits 0
// unless it cannot run at all (bad usage, OUT_DIR not writable).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/image/decode.hpp"
#include "orchard/image/resize.hpp"
#include "orchard/model/shape.hpp"

namespace {

constexpr int kSide = orchard::model::kInputSize;

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw orchard::Error("not a readable regular file; check that it exists");
  }
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw orchard::Error("cannot open the file; check that it is readable");
  const std::streamoff size = f.tellg();
  if (size < 0) throw orchard::Error("cannot read the file; check the disk and permissions");
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
  f.seekg(0);
  if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size)) {
    throw orchard::Error("cannot read the file; check the disk and permissions");
  }
  return bytes;
}

bool process(const std::string& out_dir, long index, const std::string& path) {
  std::vector<std::uint8_t> rgb;
  try {
    const auto bytes = read_file(path);
    const auto image = orchard::image::decode_to_rgb(bytes);
    rgb = orchard::image::resize_bicubic(image, kSide, kSide).pixels;
  } catch (const std::exception& e) {
    std::cout << "ERROR " << index << ' ' << path << ": " << e.what() << '\n';
    return true;
  }
  const std::string out_path = out_dir + "/" + std::to_string(index) + ".rgb";
  std::FILE* f = std::fopen(out_path.c_str(), "wb");
  bool ok = f && std::fwrite(rgb.data(), 1, rgb.size(), f) == rgb.size();
  if (f && std::fclose(f) != 0) ok = false;
  if (!ok) {
    std::cerr << "orchard-pixels: cannot write " << out_path
              << "; check that OUT_DIR exists and is writable\n";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: orchard-pixels OUT_DIR FILE...   (FILE '-' reads paths from stdin)\n";
    return 2;
  }
  std::ios::sync_with_stdio(false);
  const std::string out_dir = argv[1];
  long index = 0;
  for (int a = 2; a < argc; ++a) {
    const std::string arg = argv[a];
    if (arg == "-") {
      std::string line;
      while (std::getline(std::cin, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        if (!process(out_dir, index++, line)) return 1;
      }
    } else if (!process(out_dir, index++, arg)) {
      return 1;
    }
  }
  std::cout.flush();
  return 0;
}
