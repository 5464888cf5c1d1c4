#include "orchard/model/model.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <torch/version.h>

#include "orchard/error.hpp"
#include "orchard/model/mobilenet_v2.hpp"
#include "orchard/model/weights.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::model {
namespace fs = std::filesystem;

std::string cache_dir() {
  if (const char* d = std::getenv("ORCHARD_CACHE"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/orchard";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/orchard";
  return ".orchard-cache";
}

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

std::string prepare(const std::string& weights, const std::string& out_path) {
  if (ends_with(weights, ".pt")) {
    if (!fs::is_regular_file(weights)) throw Error(weights + ": no such prepared model file");
    return weights;
  }
  Weights w;
  if (fs::is_directory(weights)) {
    w = load_tfslim_npy_dir(weights);
  } else if (ends_with(weights, ".h5") || ends_with(weights, ".hdf5")) {
    w = load_keras_h5(weights);
  } else {
    throw Error(weights + ": not a model; pass a TF-slim .npy folder, a Keras .h5 weights file or a prepared .pt");
  }
  // The name changes with the weights, the graph Orchard builds from them and the LibTorch that froze it.
  char name[96];
  std::snprintf(name, sizeof name, "mobilenet_v2-g%d-torch%s-%016llx.pt", kGraphVersion, TORCH_VERSION,
                static_cast<unsigned long long>(fingerprint(w)));
  const std::string target = out_path.empty() ? cache_dir() + "/" + name : out_path;
  if (out_path.empty() && fs::is_regular_file(target)) return target;
  auto module = build_mobilenet_v2(w);
  const std::string tmp = target + ".tmp" + std::to_string(::getpid());
  try {
    fs::create_directories(fs::path(target).parent_path().empty() ? "." : fs::path(target).parent_path());
    module.save(tmp);
    fs::rename(tmp, target);  // atomic: a reader never sees half a model
  } catch (const std::exception& e) {
    throw Error(target + ": cannot write the prepared model (" + e.what() +
                "); set ORCHARD_CACHE or --out to a writable place");
  }
  return target;
}

std::string fetch_remote(const std::string& uri) {
  const auto loc = storage::open(uri);
  const std::string name = loc.path.substr(loc.path.rfind('/') + 1);
  if (!ends_with(name, ".pt") && !ends_with(name, ".h5") && !ends_with(name, ".hdf5"))
    throw Error(storage::redact(uri) + ": a remote model is a prepared .pt or a Keras .h5 file");
  const auto bytes = storage::read_file(loc);
  // Named by the object's path and size, so a changed object is fetched again.
  const std::string dir = cache_dir() + "/remote/" + std::to_string(std::hash<std::string>{}(loc.display())) + "-" +
                          std::to_string(bytes->size());
  const std::string target = dir + "/" + name;
  if (fs::is_regular_file(target) && static_cast<std::int64_t>(fs::file_size(target)) == bytes->size()) return target;
  storage::make_dirs(storage::open(dir));
  storage::write_atomic(storage::open(target), [&](const auto& out) {
    storage::check(out->Write(bytes), target + ": cannot write");
  });
  return target;
}

std::string resolve(const std::string& model_option) {
  if (model_option.find("://") != std::string::npos && model_option.rfind("file://", 0) != 0)
    return prepare(fetch_remote(model_option));
  if (!model_option.empty()) return prepare(model_option);
  const std::string def = cache_dir() + "/default.pt";
  if (fs::is_regular_file(def)) return def;
  throw Error(
      "no model given and no default prepared: pass --model DIR_OF_NPY|WEIGHTS.h5|MODEL.pt, or run "
      "`orchard prepare-model WEIGHTS` once (the official Keras file is "
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5, see README)");
}

Embedder::Embedder(const std::string& pt_path) {
  try {
    auto loaded = torch::jit::load(pt_path);
    loaded.eval();
    module_ = torch::jit::optimize_for_inference(loaded);
  } catch (const c10::Error& e) {
    throw Error(pt_path + ": cannot load the prepared model (" + std::string(e.what_without_backtrace()) +
                "); prepare it again with `orchard prepare-model`");
  }
}

torch::Tensor Embedder::embed(const torch::Tensor& batch) {
  torch::NoGradGuard no_grad;
  return module_.forward({batch}).toTensor();
}

}  // namespace orchard::model
