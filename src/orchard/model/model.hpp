#pragma once
// The embedding model as the pipeline sees it: prepared once (weights -> a frozen file, cached),
// loaded from that file, run on batches of float images. The engine (OpenVINO on the CPU, FP32) is a
// detail of model.cpp and mobilenet_v2.cpp: callers see model::Embedder only. No Python anywhere.
#include <memory>
#include <string>

namespace orchard::model {

// Where prepared models are cached: $ORCHARD_CACHE, else $XDG_CACHE_HOME/orchard, else ~/.cache/orchard.
std::string cache_dir();

// Turns weights (a TF-slim .npy folder or a Keras .h5 file) into a prepared model file (OpenVINO's
// IR of the graph, with its fingerprint) in the cache (or at out_path when given) and returns its
// path; reuses a cached file with the same weights, graph version and engine version. A prepared
// file is returned as is; an earlier Orchard's LibTorch .pt is refused with the way forward.
// Throws orchard::Error naming the input.
std::string prepare(const std::string& weights, const std::string& out_path = "");

// Copies a remote model (s3://.../x.ov or .h5) into the cache and returns the local path; a copy
// already cached for the object's size and modification time is reused after one HEAD.
std::string fetch_remote(const std::string& uri);

// Resolves --model (a local path or file:// URI, or an s3:// weights file; a .npy folder, .h5 or
// prepared .ov): empty means default_model_path() (written by `orchard prepare-model`). Returns a
// prepared model's path.
std::string resolve(const std::string& model_option);

// The cache's default prepared model ($cache/default.ov), used when --model is not given.
std::string default_model_path();

// What a prepared model computes, as text: engine, graph version and weights fingerprint
// ("openvino:mobilenet_v2-g3-<16 hex>", read from the file's header). The manifest records it, so
// that a rerun never mixes two models' (or engines') vectors in one OUTPUT. Throws orchard::Error
// when the file is not a prepared model.
std::string model_fingerprint(const std::string& prepared_model);

// The network behind one interface, whatever engine runs it.
class Embedder {
 public:
  virtual ~Embedder() = default;
  // Embeds n images: in holds n x 3 x 224 x 224 floats (channels first, x/127.5-1), out receives
  // n x 1280 floats (Keras MobileNetV2 without its top, average-pooled). Safe to call from several
  // threads at once (as many as load_embedder was told), each call running on its own share of
  // the cores. Throws orchard::Error when inference fails (never the images' fault).
  virtual void embed(const float* in, int n, float* out) = 0;
};

// How the engine runs a loaded model.
struct EngineOptions {
  int concurrency = 1;       // threads calling embed() at once: one OpenVINO stream each
  int threads_per_call = 1;  // cores each call runs on (featurize: 1, its workers are the parallelism
                             // and --threads the cores a process takes, as Spark's task cpus say)
  int batch = 0;             // images per call the graph is compiled for (fewer are padded, more are
                             // split); 0 = compiled for any number
};

// Loads a prepared model (a path resolve() returned), compiled for this machine's CPU in FP32 as
// options say. Throws orchard::Error naming the file when it cannot.
std::unique_ptr<Embedder> load_embedder(const std::string& prepared_model, const EngineOptions& options);

// The engine's name and version for records ("openvino", "2026.4.1").
std::string engine_name();
std::string engine_version();

}  // namespace orchard::model
