#include "orchard/model/model.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include <caffe2/serialize/inline_container.h>
#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/version.h>

#include "orchard/error.hpp"
#include "orchard/model/mobilenet_v2.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/model/weights.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::model {
namespace fs = std::filesystem;

// The record inside a prepared .pt that names what it computes (model_fingerprint).
constexpr const char* kFingerprintRecord = "orchard_fingerprint";

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
  char name[96], network[64];
  std::snprintf(name, sizeof name, "mobilenet_v2-g%d-torch%s-%016llx.pt", kGraphVersion, TORCH_VERSION,
                static_cast<unsigned long long>(fingerprint(w)));
  // What the model computes (engine, graph, weights), whatever the file is called: the manifest's check.
  std::snprintf(network, sizeof network, "libtorch:mobilenet_v2-g%d-%016llx", kGraphVersion,
                static_cast<unsigned long long>(fingerprint(w)));
  const std::string target = out_path.empty() ? cache_dir() + "/" + name : out_path;
  // A cached file prepared before fingerprints were recorded is prepared again, so that the same
  // weights always have the same fingerprint (a driver's old cache and a new executor's agree).
  if (out_path.empty() && fs::is_regular_file(target) && model_fingerprint(target) == network) return target;
  auto module = build_mobilenet_v2(w);
  static std::atomic<int> counter{0};
  const std::string tmp = layout::temporary_name(target, storage::host_name(), ::getpid(), counter++);
  try {
    fs::create_directories(fs::path(target).parent_path().empty() ? "." : fs::path(target).parent_path());
    module.save(tmp, {{kFingerprintRecord, network}});
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
  // Cached by the object's path, size and modification time (one HEAD), so a changed object is
  // fetched again and an unchanged one never is: every Spark task asks, one per node downloads.
  const auto info = storage::stat(loc);
  const auto mtime = info.mtime().time_since_epoch().count();
  const std::string dir = cache_dir() + "/remote/" + std::to_string(std::hash<std::string>{}(loc.display())) + "-" +
                          std::to_string(info.size()) + "-" + std::to_string(mtime);
  const std::string target = dir + "/" + name;
  if (fs::is_regular_file(target) && static_cast<std::int64_t>(fs::file_size(target)) == info.size()) return target;
  const auto bytes = storage::read_file(loc, info.size());
  storage::make_dirs(storage::open(dir));
  storage::write_atomic(storage::open(target), [&](const auto& out) {
    storage::check(out->Write(bytes), target + ": cannot write");
  });
  return target;
}

std::string resolve(const std::string& model_option) {
  std::string model = model_option;
  if (model.rfind("file://", 0) == 0) model = model.substr(7);  // file:///x.pt is the local /x.pt
  if (model.find("://") != std::string::npos) return prepare(fetch_remote(model));
  if (!model.empty()) return prepare(model);
  const std::string def = cache_dir() + "/default.pt";
  if (fs::is_regular_file(def)) return def;
  throw Error(
      "no model given and no default prepared: pass --model DIR_OF_NPY|WEIGHTS.h5|MODEL.pt, or run "
      "`orchard prepare-model WEIGHTS` once (the official Keras file is "
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5, see README)");
}

std::string model_fingerprint(const std::string& pt_path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(pt_path);  // reads the zip's directory, not the weights
    const std::string record = std::string("extra/") + kFingerprintRecord;
    if (reader.hasRecord(record)) {
      auto [data, size] = reader.getRecord(record);
      return std::string(static_cast<const char*>(data.get()), size);
    }
  } catch (const c10::Error& e) {
    throw Error(pt_path + ": not a prepared model (" + std::string(e.what_without_backtrace()) +
                "); prepare it again with `orchard prepare-model`");
  }
  // Prepared before fingerprints were recorded: its bytes stand for it.
  std::ifstream in(pt_path, std::ios::binary);
  if (!in) throw Error(pt_path + ": cannot read the prepared model; prepare it again with `orchard prepare-model`");
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a, 64 bits
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h ^= static_cast<unsigned char>(buf[i]);
      h *= 1099511628211ull;
    }
  }
  char hex[32];
  std::snprintf(hex, sizeof hex, "file:%016llx", static_cast<unsigned long long>(h));
  return hex;
}

namespace {
// LibTorch: the frozen TorchScript module, optimized for inference when loaded.
class TorchEmbedder final : public Embedder {
 public:
  explicit TorchEmbedder(const std::string& pt_path) {
    try {
      auto loaded = torch::jit::load(pt_path);
      loaded.eval();
      module_ = torch::jit::optimize_for_inference(loaded);
    } catch (const c10::Error& e) {
      throw Error(pt_path + ": cannot load the prepared model (" + std::string(e.what_without_backtrace()) +
                  "); prepare it again with `orchard prepare-model`");
    }
  }

  void embed(const float* in, int n, float* out) override {
    thread_local const bool one_thread = [] {
      at::set_num_threads(1);  // no OpenMP spinning beside the other workers
      return true;
    }();
    (void)one_thread;
    try {
      torch::NoGradGuard no_grad;
      const auto batch = torch::from_blob(const_cast<float*>(in), {n, 3, kInputSize, kInputSize}, torch::kFloat);
      const auto result = module_.forward({batch}).toTensor().contiguous();
      if (result.numel() != static_cast<std::int64_t>(n) * kEmbeddingDim)
        throw Error("inference failed: the model gave " + std::to_string(result.numel()) + " values for " +
                    std::to_string(n) + " images; prepare it again with `orchard prepare-model`");
      std::copy(result.data_ptr<float>(), result.data_ptr<float>() + result.numel(), out);
    } catch (const c10::Error& e) {
      throw Error(std::string("inference failed: ") + e.what_without_backtrace());
    }
  }

 private:
  torch::jit::Module module_;
};
}  // namespace

std::unique_ptr<Embedder> load_embedder(const std::string& prepared_model) {
  return std::make_unique<TorchEmbedder>(prepared_model);
}

std::string engine_name() { return "libtorch"; }
std::string engine_version() { return TORCH_VERSION; }

}  // namespace orchard::model
