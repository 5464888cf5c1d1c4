#pragma once
// The embedding model as the pipeline sees it: prepared once (weights -> a frozen file, cached),
// loaded from that file, run on batches of float images. The engine (LibTorch's TorchScript today)
// is a detail of model.cpp: callers see model::Embedder only. No Python anywhere.
#include <memory>
#include <string>

namespace orchard::model {

// Where prepared models are cached: $ORCHARD_CACHE, else $XDG_CACHE_HOME/orchard, else ~/.cache/orchard.
std::string cache_dir();

// Turns weights (a TF-slim .npy folder or a Keras .h5 file) into a frozen TorchScript file in the
// cache (or at out_path when given) and returns its path; reuses a cached file with the same
// weights fingerprint. A .pt input is returned as is. Throws orchard::Error naming the input.
std::string prepare(const std::string& weights, const std::string& out_path = "");

// Copies a remote model (s3://.../x.pt or .h5) into the cache and returns the local path; a copy
// already cached for the object's size and modification time is reused after one HEAD.
std::string fetch_remote(const std::string& uri);

// Resolves --model (a local path or file:// URI, or an s3:// weights file; a .npy folder, .h5 or
// .pt): empty means the cache's default.pt (written by `orchard prepare-model`). Returns a
// prepared .pt path.
std::string resolve(const std::string& model_option);

// What a prepared model computes, as text: engine, graph version and weights fingerprint
// ("libtorch:mobilenet_v2-g1-<16 hex>", recorded inside the .pt by prepare; "file:<16 hex>" of the
// bytes for a .pt prepared before). The manifest records it, so that a rerun never mixes two
// models' vectors in one OUTPUT. Throws orchard::Error when the file is not a prepared model.
std::string model_fingerprint(const std::string& pt_path);

// The network behind one interface, whatever engine runs it.
class Embedder {
 public:
  virtual ~Embedder() = default;
  // Embeds n images: in holds n x 3 x 224 x 224 floats (channels first, x/127.5-1), out receives
  // n x 1280 floats (Keras MobileNetV2 without its top, average-pooled). Safe to call from several
  // threads at once, each running one batch with one intra-op thread (the workers are the
  // parallelism). Throws orchard::Error when inference fails (never the images' fault).
  virtual void embed(const float* in, int n, float* out) = 0;
};

// Loads a prepared model (a path resolve() returned) into the engine that prepared it, optimized
// for this machine. Throws orchard::Error naming the file when it cannot.
std::unique_ptr<Embedder> load_embedder(const std::string& prepared_model);

// The engine's name and version for records ("libtorch", "2.15.0").
std::string engine_name();
std::string engine_version();

}  // namespace orchard::model
