#pragma once
// MobileNetV2 (width 1.0, 224x224) as a TorchScript module built in C++ from Keras-named weights:
// BatchNorm folded into the convolutions, TF "same" padding reproduced, frozen for inference.
#include <torch/script.h>

#include "orchard/model/shape.hpp"
#include "orchard/model/weights.hpp"

namespace orchard::model {

// Bumped whenever build_mobilenet_v2 emits a different graph, so cached models are rebuilt.
inline constexpr int kGraphVersion = 2;

// Builds the frozen module: forward(x: [N,3,224,224] float, x/127.5-1) -> [N,1280] average-pooled
// embedding (Keras MobileNetV2(include_top=False, pooling='avg')). Throws orchard::Error naming any
// missing or mis-shaped weight.
torch::jit::Module build_mobilenet_v2(const Weights& w);

}  // namespace orchard::model
