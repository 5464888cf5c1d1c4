#pragma once
// The network's input and output sizes, stated once for every stage (no engine header needed).

namespace orchard::model {

inline constexpr int kEmbeddingDim = 1280;  // MobileNetV2 1.0 without its top, average-pooled
inline constexpr int kInputSize = 224;      // images are resized to kInputSize x kInputSize

}  // namespace orchard::model
