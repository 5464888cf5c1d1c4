#include "orchard/model/model.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

#include <openvino/core/version.hpp>
#include <openvino/pass/manager.hpp>
#include <openvino/pass/serialize.hpp>
#include <openvino/runtime/core.hpp>
#include <openvino/runtime/intel_cpu/properties.hpp>
#include <openvino/runtime/properties.hpp>

#include "orchard/error.hpp"
#include "orchard/model/mobilenet_v2.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/model/weights.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::model {
namespace fs = std::filesystem;

namespace {
// A prepared model is one file: this first line, the fingerprint line, "<xml bytes> <bin bytes>",
// then OpenVINO's IR (the graph's XML and its weights), so that it is written and renamed atomically
// and model_fingerprint reads two lines, not the weights.
constexpr const char* kMagic = "orchard prepared model 1";
constexpr const char* kExtension = ".ov";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string engine_tag() { return engine_name() + engine_version(); }

// What a LibTorch .pt of an earlier Orchard gets: a way forward, not a parse error.
[[noreturn]] void refuse_torchscript(const std::string& path) {
  throw Error(path + ": a LibTorch model prepared by an earlier Orchard; this Orchard runs OpenVINO: prepare the "
              "weights again with `orchard prepare-model WEIGHTS` (a .npy folder or a Keras .h5) and pass that");
}

struct Header {
  std::string fingerprint;
  std::size_t xml_bytes = 0, bin_bytes = 0;
};

// Reads a prepared file's header and checks that the file holds exactly what it announces; the
// stream is left at the XML. Throws orchard::Error naming path.
Header read_header(std::ifstream& in, const std::string& path) {
  std::string magic, sizes;
  if (!in || !std::getline(in, magic)) throw Error(path + ": cannot read the prepared model; prepare it again with `orchard prepare-model`");
  if (magic.rfind("PK", 0) == 0 && ends_with(path, ".pt")) refuse_torchscript(path);
  if (magic != kMagic) throw Error(path + ": not a model prepared by Orchard; prepare it with `orchard prepare-model WEIGHTS`");
  const auto damaged = [&](const std::string& why) {
    return Error(path + ": a damaged prepared model (" + why + "); prepare it again with `orchard prepare-model`");
  };
  Header h;
  if (!std::getline(in, h.fingerprint) || !std::getline(in, sizes)) throw damaged("no header");
  const char* end = sizes.data() + sizes.size();
  auto [p, e1] = std::from_chars(sizes.data(), end, h.xml_bytes);
  if (e1 != std::errc() || p == end || *p != ' ') throw damaged("bad sizes");
  auto [q, e2] = std::from_chars(p + 1, end, h.bin_bytes);
  if (e2 != std::errc() || q != end) throw damaged("bad sizes");
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec), body = static_cast<std::uintmax_t>(in.tellg());
  if (ec || body > size || h.xml_bytes > size - body || h.bin_bytes != size - body - h.xml_bytes)
    throw damaged("its size is not what its header says");
  return h;
}

// A cached file is reused only when it is a whole prepared model of the wanted fingerprint
// (anything else under that name is prepared again).
bool is_whole(const std::string& path, const std::string& fingerprint) {
  if (!fs::is_regular_file(path)) return false;
  try {
    std::ifstream in(path, std::ios::binary);
    return read_header(in, path).fingerprint == fingerprint;
  } catch (const Error&) {
    return false;
  }
}

// The one OpenVINO runtime of the process (it finds its CPU plugin beside libopenvino).
ov::Core& core() {
  static ov::Core c;
  return c;
}
}  // namespace

std::string cache_dir() {
  if (const char* d = std::getenv("ORCHARD_CACHE"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/orchard";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/orchard";
  return ".orchard-cache";
}

std::string default_model_path() { return cache_dir() + "/default" + kExtension; }

std::string prepare(const std::string& weights, const std::string& out_path) {
  Weights w;
  if (fs::is_directory(weights)) {
    w = load_tfslim_npy_dir(weights);
  } else if (ends_with(weights, ".h5") || ends_with(weights, ".hdf5")) {
    w = load_keras_h5(weights);
  } else if (fs::is_regular_file(weights)) {
    model_fingerprint(weights);  // a whole prepared model, or the reason it is not
    return weights;
  } else if (ends_with(weights, kExtension) || ends_with(weights, ".pt")) {
    throw Error(weights + ": no such prepared model file");
  } else {
    throw Error(weights + ": not a model; pass a TF-slim .npy folder, a Keras .h5 weights file or a prepared .ov");
  }
  // The name changes with the weights, the graph Orchard builds from them and the engine's version,
  // so an old cache never loads into a new engine.
  const auto fp = static_cast<unsigned long long>(fingerprint(w));
  char name[128], network[64];
  std::snprintf(name, sizeof name, "mobilenet_v2-g%d-%s-%016llx%s", kGraphVersion, engine_tag().c_str(), fp, kExtension);
  // What the model computes (engine, graph, weights), whatever the file is called: the manifest's check.
  std::snprintf(network, sizeof network, "openvino:mobilenet_v2-g%d-%016llx", kGraphVersion, fp);
  const std::string target = out_path.empty() ? cache_dir() + "/" + name : out_path;
  if (out_path.empty() && is_whole(target, network)) return target;
  std::ostringstream xml, bin;
  try {
    ov::pass::Manager passes;
    passes.register_pass<ov::pass::Serialize>(xml, bin);
    passes.run_passes(build_mobilenet_v2(w));
  } catch (const ov::Exception& e) {
    throw Error(weights + ": cannot build the OpenVINO graph (" + std::string(e.what()) + ")");
  }
  static std::atomic<int> counter{0};
  const std::string tmp = layout::temporary_name(target, storage::host_name(), ::getpid(), counter++);
  try {
    fs::create_directories(fs::path(target).parent_path().empty() ? "." : fs::path(target).parent_path());
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      const std::string x = xml.str(), b = bin.str();
      out << kMagic << '\n' << network << '\n' << x.size() << ' ' << b.size() << '\n' << x << b;
      out.close();
      if (!out) throw std::runtime_error("write failed");
    }
    fs::rename(tmp, target);  // atomic: a reader never sees half a model
  } catch (const std::exception& e) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw Error(target + ": cannot write the prepared model (" + e.what() +
                "); set ORCHARD_CACHE or --out to a writable place");
  }
  return target;
}

std::string fetch_remote(const std::string& uri) {
  const auto loc = storage::open(uri);
  const std::string name = loc.path.substr(loc.path.rfind('/') + 1);
  if (ends_with(name, ".pt")) refuse_torchscript(storage::redact(uri));
  if (!ends_with(name, kExtension) && !ends_with(name, ".h5") && !ends_with(name, ".hdf5"))
    throw Error(storage::redact(uri) + ": a remote model is a prepared .ov or a Keras .h5 file");
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
  if (model.rfind("file://", 0) == 0) model = model.substr(7);  // file:///x.ov is the local /x.ov
  if (model.find("://") != std::string::npos) return prepare(fetch_remote(model));
  if (!model.empty()) return prepare(model);
  const std::string def = default_model_path();
  if (fs::is_regular_file(def)) return def;
  if (const std::string old = cache_dir() + "/default.pt"; fs::is_regular_file(old)) refuse_torchscript(old);
  throw Error(
      "no model given and no default prepared: pass --model DIR_OF_NPY|WEIGHTS.h5|MODEL.ov, or run "
      "`orchard prepare-model WEIGHTS` once (the official Keras file is "
      "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5, see README)");
}

std::string model_fingerprint(const std::string& prepared_model) {
  std::ifstream in(prepared_model, std::ios::binary);
  return read_header(in, prepared_model).fingerprint;
}

namespace {
// OpenVINO on the CPU, FP32 forced: one compiled model, one stream per calling thread, one infer
// request per concurrent call, reused. With a fixed batch the graph is compiled for that shape
// (the CPU plugin's static-shape kernels); a call with fewer images pads the batch with zeros.
class OpenVinoEmbedder final : public Embedder {
 public:
  OpenVinoEmbedder(const std::string& path, const EngineOptions& o) : batch_(std::max(0, o.batch)) {
    std::ifstream in(path, std::ios::binary);
    const Header h = read_header(in, path);  // the sizes are the file's
    std::string xml(h.xml_bytes, '\0');
    weights_ = ov::Tensor(ov::element::u8, ov::Shape{h.bin_bytes});
    in.read(xml.data(), static_cast<std::streamsize>(h.xml_bytes));
    in.read(static_cast<char*>(weights_.data()), static_cast<std::streamsize>(h.bin_bytes));
    if (!in) throw Error(path + ": cannot read the prepared model; prepare it again with `orchard prepare-model`");
    const int streams = std::max(1, o.concurrency), threads = streams * std::max(1, o.threads_per_call);
    try {
      auto model = core().read_model(xml, weights_);
      if (batch_ > 0) model->reshape(ov::PartialShape{batch_, 3, kInputSize, kInputSize});
      compiled_ = core().compile_model(
          model, "CPU", ov::hint::inference_precision(ov::element::f32),
          ov::hint::execution_mode(ov::hint::ExecutionMode::ACCURACY), ov::num_streams(streams),
          ov::inference_num_threads(threads),
          // No pinning: OpenVINO would pin every process's streams from the first core on, and
          // several processes share a node (Spark tasks); the kernel places them (no loss measured).
          ov::hint::enable_cpu_pinning(false));
    } catch (const ov::Exception& e) {
      throw Error(path + ": cannot load the prepared model (" + std::string(e.what()) +
                  "); prepare it again with `orchard prepare-model`");
    }
  }

  void embed(const float* in, int n, float* out) override {
    constexpr std::size_t kPixels = 3ull * kInputSize * kInputSize;
    if (batch_ == 0) return run(in, n, n, out);
    for (int first = 0; first < n; first += batch_) {
      const int m = std::min(batch_, n - first);
      const float* images = in + first * kPixels;
      thread_local std::vector<float> padded;
      if (m < batch_) {
        padded.assign(static_cast<std::size_t>(batch_) * kPixels, 0.f);
        std::copy_n(images, m * kPixels, padded.data());
        images = padded.data();
      }
      run(images, batch_, m, out + static_cast<std::size_t>(first) * kEmbeddingDim);
    }
  }

 private:
  // Runs n images, copies the first `keep` embeddings to out.
  void run(const float* in, int n, int keep, float* out) {
    std::optional<ov::InferRequest> taken;
    // The request goes back to the pool however the call ends.
    struct GiveBack {
      OpenVinoEmbedder* self;
      std::optional<ov::InferRequest>* request;
      ~GiveBack() {
        if (*request) self->give_back(std::move(**request));
      }
    } guard{this, &taken};
    try {
      taken = take();
      ov::InferRequest& request = *taken;
      request.set_input_tensor(
          ov::Tensor(ov::element::f32, ov::Shape{static_cast<std::size_t>(n), 3, kInputSize, kInputSize}, const_cast<float*>(in)));
      request.infer();
      const ov::Tensor result = request.get_output_tensor();
      if (result.get_size() != static_cast<std::size_t>(n) * kEmbeddingDim)
        throw Error("inference failed: the model gave " + std::to_string(result.get_size()) + " values for " +
                    std::to_string(n) + " images; prepare it again with `orchard prepare-model`");
      std::copy_n(result.data<const float>(), static_cast<std::size_t>(keep) * kEmbeddingDim, out);
    } catch (const ov::Exception& e) {
      throw Error(std::string("inference failed: ") + e.what());
    }
  }

  ov::InferRequest take() {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.empty()) return compiled_.create_infer_request();
    ov::InferRequest r = std::move(idle_.back());
    idle_.pop_back();
    return r;
  }
  void give_back(ov::InferRequest r) {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(std::move(r));
  }

  const int batch_;     // the compiled batch size; 0: any
  ov::Tensor weights_;  // the IR's weights, which the model's constants may point into
  ov::CompiledModel compiled_;
  std::mutex mu_;
  std::vector<ov::InferRequest> idle_;
};
}  // namespace

std::unique_ptr<Embedder> load_embedder(const std::string& prepared_model, const EngineOptions& options) {
  return std::make_unique<OpenVinoEmbedder>(prepared_model, options);
}

std::string engine_name() { return "openvino"; }
std::string engine_version() {
  return std::to_string(OPENVINO_VERSION_MAJOR) + "." + std::to_string(OPENVINO_VERSION_MINOR) + "." +
         std::to_string(OPENVINO_VERSION_PATCH);
}

}  // namespace orchard::model
