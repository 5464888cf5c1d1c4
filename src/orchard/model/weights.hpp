#pragma once
// MobileNetV2 weights by Keras name ("Conv1/kernel", "bn_Conv1/gamma", ...), loaded from the
// TF-slim .npy folder or from a Keras HDF5 weights file (the official *_no_top.h5 layout).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace orchard::model {

// A dense float32 array in C order (no engine needed to hold weights).
struct Array {
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};

// Keras layer/weight name -> float32 array in Keras layout (HWIO kernels, HWC1 depthwise).
using Weights = std::map<std::string, Array>;

// Reads one little-endian float32 .npy file. Throws orchard::Error naming the file.
Array read_npy(const std::string& path);

// Loads the TF-slim .npy folder (../shared/models/mobilenet_v2_1.0_224_tfslim) into Keras names.
Weights load_tfslim_npy_dir(const std::string& dir);

// Loads every dataset of a Keras HDF5 weights file into Keras names ("layer/weight", ":0" dropped).
Weights load_keras_h5(const std::string& path);

// A stable 64-bit fingerprint of the weights' names, shapes and values (names the model cache).
std::uint64_t fingerprint(const Weights& w);

}  // namespace orchard::model
