#include "orchard/model/weights.hpp"

#include <hdf5.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/fingerprint.hpp"

namespace orchard::model {
namespace fs = std::filesystem;

Array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the .npy file; check the weights folder");
  char magic[8];
  in.read(magic, 8);
  if (!in || std::string(magic, 6) != "\x93NUMPY")
    throw Error(path + ": not a .npy file (bad magic); the weights folder holds NumPy .npy files");
  const int major = static_cast<unsigned char>(magic[6]);
  std::uint32_t header_len = 0;
  if (major == 1) {
    std::uint16_t h16 = 0;
    in.read(reinterpret_cast<char*>(&h16), 2);
    header_len = h16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (header.find("'descr': '<f4'") == std::string::npos)
    throw Error(path + ": expected little-endian float32 ('<f4'), header is " + header);
  if (header.find("'fortran_order': True") != std::string::npos)
    throw Error(path + ": Fortran-ordered .npy is not supported; save it in C order");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'shape': \\(([0-9, ]*)\\)")))
    throw Error(path + ": no shape in .npy header " + header);
  std::vector<std::int64_t> shape;
  const std::string dims = m[1];
  std::string num;
  for (char c : dims + ",") {
    if (c >= '0' && c <= '9') { num += c; } else if (!num.empty()) { shape.push_back(std::stoll(num)); num.clear(); }
  }
  Array t{shape, {}};
  std::int64_t count = 1;
  for (auto d : shape) count *= d;
  t.values.resize(static_cast<std::size_t>(count));
  in.read(reinterpret_cast<char*>(t.values.data()), count * 4);
  if (!in) throw Error(path + ": file shorter than its header's shape; re-download the weights");
  return t;
}

Weights load_tfslim_npy_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error(dir + ": not a folder of TF-slim .npy weights");
  static const std::vector<std::string> bn = {"gamma", "beta", "moving_mean", "moving_variance"};
  Weights w;
  // Kernel "<slim>_weights" -> "<keras>/<kernel>", BN "<slim>_BatchNorm_*" -> "<keras_bn>/*".
  auto layer = [&](const std::string& slim, const std::string& kernel_file, const std::string& keras,
                   const std::string& kernel, const std::string& keras_bn) {
    w[keras + "/" + kernel] = read_npy(dir + "/" + kernel_file + ".npy");
    for (const auto& b : bn) w[keras_bn + "/" + b] = read_npy(dir + "/" + slim + "_BatchNorm_" + b + ".npy");
  };
  auto conv = [&](const std::string& slim, const std::string& keras, const std::string& kernel,
                  const std::string& keras_bn) { layer(slim, slim + "_weights", keras, kernel, keras_bn); };
  auto depthwise = [&](const std::string& slim, const std::string& keras) {
    layer(slim, slim + "_depthwise_weights", keras, "depthwise_kernel", keras + "_BN");
  };
  conv("Conv", "Conv1", "kernel", "bn_Conv1");
  depthwise("expanded_conv_depthwise", "expanded_conv_depthwise");
  conv("expanded_conv_project", "expanded_conv_project", "kernel", "expanded_conv_project_BN");
  for (int n = 1; n <= 16; ++n) {
    const std::string s = "expanded_conv_" + std::to_string(n), k = "block_" + std::to_string(n);
    conv(s + "_expand", k + "_expand", "kernel", k + "_expand_BN");
    depthwise(s + "_depthwise", k + "_depthwise");
    conv(s + "_project", k + "_project", "kernel", k + "_project_BN");
  }
  conv("Conv_1", "Conv_1", "kernel", "Conv_1_bn");
  return w;
}

namespace {
struct H5Visit {
  hid_t file;
  Weights* out;
  std::string error;
};

herr_t visit_object(hid_t obj, const char* name, const H5O_info_t* info, void* data) {
  auto* v = static_cast<H5Visit*>(data);
  if (info->type != H5O_TYPE_DATASET) return 0;
  // "<layer>/<layer>/<weight>:0", or "model_weights/<layer>/..." in full-model files.
  std::vector<std::string> parts;
  std::string s(name), part;
  for (char c : s) {
    if (c == '/') { if (!part.empty()) parts.push_back(part); part.clear(); } else part += c;
  }
  if (!part.empty()) parts.push_back(part);
  if (!parts.empty() && parts[0] == "model_weights") parts.erase(parts.begin());
  if (parts.size() < 2) return 0;
  std::string weight = parts.back();
  if (auto colon = weight.find(':'); colon != std::string::npos) weight.resize(colon);
  hid_t ds = H5Dopen2(obj, name, H5P_DEFAULT);
  if (ds < 0) {
    v->error = std::string("cannot open dataset ") + name;
    return -1;
  }
  hid_t space = H5Dget_space(ds);
  const int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
  if (rank < 0) {
    v->error = std::string("cannot read the shape of dataset ") + name;
    if (space >= 0) H5Sclose(space);
    H5Dclose(ds);
    return -1;
  }
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  std::vector<std::int64_t> shape(dims.begin(), dims.end());
  Array t{shape, {}};
  std::int64_t count = 1;
  for (auto d : shape) count *= d;
  t.values.resize(static_cast<std::size_t>(count));
  if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.values.data()) < 0)
    v->error = std::string("cannot read dataset ") + name;
  H5Sclose(space);
  H5Dclose(ds);
  (*v->out)[parts[0] + "/" + weight] = t;
  return v->error.empty() ? 0 : -1;
}
}  // namespace

Weights load_keras_h5(const std::string& path) {
  if (!fs::is_regular_file(path)) throw Error(path + ": no such Keras .h5 weights file");
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // we report errors ourselves
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) throw Error(path + ": not an HDF5 file; pass the Keras *_no_top.h5 weights file");
  Weights w;
  H5Visit v{file, &w, {}};
  const herr_t rc = H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_NATIVE, visit_object, &v, H5O_INFO_BASIC);
  H5Fclose(file);
  if (rc < 0) throw Error(path + ": " + (v.error.empty() ? "cannot walk the HDF5 file" : v.error));
  return w;
}

std::uint64_t fingerprint(const Weights& w) {
  Fingerprint f;  // over names, shapes and bytes
  for (const auto& [name, t] : w) {
    f.mix(name.data(), name.size());
    for (std::int64_t d : t.shape) f.mix(&d, sizeof d);
    f.mix(t.values.data(), t.values.size() * sizeof(float));
  }
  return f.value();
}

}  // namespace orchard::model
