#include "orchard/model/mobilenet_v2.hpp"

#include <cmath>
#include <sstream>

#include <openvino/op/add.hpp>
#include <openvino/op/clamp.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/convolution.hpp>
#include <openvino/op/group_conv.hpp>
#include <openvino/op/parameter.hpp>
#include <openvino/op/reduce_mean.hpp>
#include <openvino/op/result.hpp>

#include "orchard/error.hpp"

namespace orchard::model {
namespace {

constexpr float kBatchNormEpsilon = 1e-3f;  // Keras MobileNetV2

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

const Array& get(const Weights& w, const std::string& name, const std::vector<std::int64_t>& shape) {
  auto it = w.find(name);
  if (it == w.end())
    throw Error("weights: missing '" + name + "'; pass the MobileNetV2 1.0 224 weights (TF-slim .npy folder or Keras *_no_top.h5)");
  if (it->second.shape != shape)
    throw Error("weights: '" + name + "' has shape " + shape_text(it->second.shape) + ", expected " +
                shape_text(shape) + "; these are not MobileNetV2 1.0 224 weights");
  return it->second;
}

// A convolution (Keras layer `conv`, followed by BatchNorm `bn`, folded into its kernel and a bias)
// with optional ReLU6. depthwise: a 3x3 kernel per channel. Padding is TF "same": for a 3x3 kernel
// at stride 2 on an even size, 0 before and 1 after; at stride 1, 1 on both sides.
ov::Output<ov::Node> conv_bn(const Weights& w, ov::Output<ov::Node> x, const std::string& conv,
                             const std::string& bn, int in, int out, int kernel, int stride, bool depthwise,
                             bool relu6) {
  const auto& gamma = get(w, bn + "/gamma", {out}).values;
  const auto& beta = get(w, bn + "/beta", {out}).values;
  const auto& mean = get(w, bn + "/moving_mean", {out}).values;
  const auto& var = get(w, bn + "/moving_variance", {out}).values;
  std::vector<float> scale(out), bias(out);
  for (int o = 0; o < out; ++o) {
    scale[o] = gamma[o] / std::sqrt(var[o] + kBatchNormEpsilon);
    bias[o] = beta[o] - mean[o] * scale[o];
  }
  const std::size_t taps = static_cast<std::size_t>(kernel) * kernel;
  const std::size_t before = kernel == 3 && stride == 1 ? 1 : 0, after = kernel == 3 ? 1 : 0;
  const ov::Strides strides{static_cast<std::size_t>(stride), static_cast<std::size_t>(stride)};
  const ov::CoordinateDiff pads_begin(2, static_cast<std::ptrdiff_t>(before)), pads_end(2, static_cast<std::ptrdiff_t>(after));
  std::shared_ptr<ov::Node> y;
  if (depthwise) {
    // Keras [kh, kw, C, 1] -> OpenVINO's grouped [C, 1, 1, kh, kw].
    const auto& k = get(w, conv + "/depthwise_kernel", {kernel, kernel, in, 1}).values;
    std::vector<float> folded(static_cast<std::size_t>(in) * taps);
    for (int c = 0; c < in; ++c)
      for (std::size_t t = 0; t < taps; ++t) folded[c * taps + t] = k[t * in + c] * scale[c];
    const auto weights = ov::op::v0::Constant::create(
        ov::element::f32, ov::Shape{static_cast<std::size_t>(in), 1, 1, static_cast<std::size_t>(kernel), static_cast<std::size_t>(kernel)}, folded);
    y = std::make_shared<ov::op::v1::GroupConvolution>(x, weights, strides, pads_begin, pads_end, ov::Strides{1, 1});
  } else {
    // Keras [kh, kw, in, out] -> OpenVINO's [out, in, kh, kw].
    const auto& k = get(w, conv + "/kernel", {kernel, kernel, in, out}).values;
    std::vector<float> folded(static_cast<std::size_t>(out) * in * taps);
    for (int o = 0; o < out; ++o)
      for (int i = 0; i < in; ++i)
        for (std::size_t t = 0; t < taps; ++t)
          folded[(static_cast<std::size_t>(o) * in + i) * taps + t] = k[(t * in + i) * out + o] * scale[o];
    const auto weights = ov::op::v0::Constant::create(
        ov::element::f32, ov::Shape{static_cast<std::size_t>(out), static_cast<std::size_t>(in), static_cast<std::size_t>(kernel), static_cast<std::size_t>(kernel)}, folded);
    y = std::make_shared<ov::op::v1::Convolution>(x, weights, strides, pads_begin, pads_end, ov::Strides{1, 1});
  }
  y = std::make_shared<ov::op::v1::Add>(
      y, ov::op::v0::Constant::create(ov::element::f32, ov::Shape{1, static_cast<std::size_t>(out), 1, 1}, bias));
  if (relu6) y = std::make_shared<ov::op::v0::Clamp>(y, 0.0, 6.0);
  return y;
}

}  // namespace

std::shared_ptr<ov::Model> build_mobilenet_v2(const Weights& w) {
  auto pixels = std::make_shared<ov::op::v0::Parameter>(
      ov::element::f32, ov::PartialShape{ov::Dimension::dynamic(), 3, kInputSize, kInputSize});
  pixels->set_friendly_name("pixels");
  pixels->output(0).set_names({"pixels"});
  ov::Output<ov::Node> x = conv_bn(w, pixels, "Conv1", "bn_Conv1", 3, 32, 3, 2, false, true);
  // (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
  const int config[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                            {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int in = 32, block = 0;
  for (const auto& [t, c, n, s] : config) {
    for (int i = 0; i < n; ++i, ++block) {
      const int stride = i == 0 ? s : 1, hidden = in * t;
      const std::string name = block == 0 ? "expanded_conv" : "block_" + std::to_string(block);
      const auto shortcut = x;
      if (block > 0) x = conv_bn(w, x, name + "_expand", name + "_expand_BN", in, hidden, 1, 1, false, true);
      x = conv_bn(w, x, name + "_depthwise", name + "_depthwise_BN", hidden, hidden, 3, stride, true, true);
      x = conv_bn(w, x, name + "_project", name + "_project_BN", hidden, c, 1, 1, false, false);
      if (stride == 1 && in == c) x = std::make_shared<ov::op::v1::Add>(x, shortcut);
      in = c;
    }
  }
  x = conv_bn(w, x, "Conv_1", "Conv_1_bn", 320, kEmbeddingDim, 1, 1, false, true);
  auto pooled = std::make_shared<ov::op::v1::ReduceMean>(
      x, ov::op::v0::Constant::create(ov::element::i64, ov::Shape{2}, std::vector<std::int64_t>{2, 3}), false);
  pooled->output(0).set_names({"embedding"});
  auto result = std::make_shared<ov::op::v0::Result>(pooled);
  return std::make_shared<ov::Model>(ov::ResultVector{result}, ov::ParameterVector{pixels}, "mobilenet_v2");
}

}  // namespace orchard::model
