#pragma once
// The embedding model as the pipeline sees it: prepared once (weights -> frozen TorchScript file,
// cached), loaded from that file, run on batches. No Python anywhere.
#include <string>

#include <torch/script.h>

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

class Embedder {
 public:
  // Loads a prepared TorchScript file and optimizes it for inference on this machine.
  explicit Embedder(const std::string& pt_path);
  // Runs a batch [N,3,224,224] (x/127.5-1) and returns [N,1280] float embeddings. Safe to call
  // from several threads at once (the workers share one module).
  torch::Tensor embed(const torch::Tensor& batch);

 private:
  torch::jit::Module module_;
};

}  // namespace orchard::model
