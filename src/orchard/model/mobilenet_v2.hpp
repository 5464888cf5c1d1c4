#pragma once
// MobileNetV2 (width 1.0, 224x224) as an OpenVINO graph built in C++ from Keras-named weights:
// BatchNorm folded into the convolutions, TF "same" padding as explicit pads_begin/pads_end.
#include <memory>

#include <openvino/core/model.hpp>

#include "orchard/model/shape.hpp"
#include "orchard/model/weights.hpp"

namespace orchard::model {

// Bumped whenever build_mobilenet_v2 emits a different graph, so cached models are rebuilt.
// (1-2: the LibTorch graphs of earlier versions; 3: OpenVINO.)
inline constexpr int kGraphVersion = 3;

// Builds the graph: input "pixels" [N,3,224,224] float (x/127.5-1, N free) -> output "embedding"
// [N,1280], the average-pooled embedding of Keras MobileNetV2(include_top=False, pooling='avg').
// Throws orchard::Error naming any missing or mis-shaped weight.
std::shared_ptr<ov::Model> build_mobilenet_v2(const Weights& w);

}  // namespace orchard::model
