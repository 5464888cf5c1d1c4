#include "orchard/model/mobilenet_v2.hpp"

#include <sstream>

#include "orchard/error.hpp"

namespace orchard::model {
namespace {

constexpr double kBatchNormEpsilon = 1e-3;  // Keras MobileNetV2

const torch::Tensor& get(const Weights& w, const std::string& name, std::vector<int64_t> shape) {
  auto it = w.find(name);
  if (it == w.end())
    throw Error("weights: missing '" + name + "'; pass the MobileNetV2 1.0 224 weights (TF-slim .npy folder or Keras *_no_top.h5)");
  if (it->second.sizes().vec() != shape) {
    std::ostringstream os;
    os << "weights: '" << name << "' has shape " << it->second.sizes() << ", expected " << shape
       << "; these are not MobileNetV2 1.0 224 weights";
    throw Error(os.str());
  }
  return it->second;
}

// Emits TorchScript for the layers while registering their (BN-folded) parameters.
class Builder {
 public:
  explicit Builder(const Weights& w) : w_(w), module_("MobileNetV2") {}

  // A convolution (Keras layer `conv`, followed by BN `bn`) with optional ReLU6, on variable x.
  // depthwise: 3x3 per-channel kernel; stride 2 pads 0 before and 1 after (TF "same").
  void conv_bn(const std::string& conv, const std::string& bn, int in, int out, int kernel,
               int stride, bool depthwise, bool relu6) {
    torch::Tensor k;
    if (depthwise) {
      k = get(w_, conv + "/depthwise_kernel", {kernel, kernel, in, 1}).permute({2, 3, 0, 1});
    } else {
      k = get(w_, conv + "/kernel", {kernel, kernel, in, out}).permute({3, 2, 0, 1});
    }
    const auto gamma = get(w_, bn + "/gamma", {out}), beta = get(w_, bn + "/beta", {out});
    const auto mean = get(w_, bn + "/moving_mean", {out}), var = get(w_, bn + "/moving_variance", {out});
    const auto scale = gamma / at::sqrt(var + kBatchNormEpsilon);
    auto weight = (k * scale.view({-1, 1, 1, 1})).contiguous();
    const auto bias = (beta - mean * scale).contiguous();
    const std::string p = "p" + std::to_string(count_++);

    int pad = kernel / 2;
    if (kernel == 3 && stride == 2) {
      // TF "same" pads 0 before and 1 after. A 4x4 kernel whose first row and column are zero,
      // with symmetric padding 1, reads exactly the same window and keeps the whole graph in
      // oneDNN layouts (an explicit pad op forces a conversion to dense and back).
      weight = at::constant_pad_nd(weight, {1, 0, 1, 0}, 0.0).contiguous();
      pad = 1;
    }
    module_.register_parameter(p + "_w", weight, false);
    module_.register_parameter(p + "_b", bias, false);
    src_ << "        x = torch.conv2d(x, self." << p << "_w, self." << p << "_b, ["
         << stride << ", " << stride << "], [" << pad << ", " << pad << "], [1, 1], "
         << (depthwise ? in : 1) << ")\n";
    if (relu6) src_ << "        x = torch.hardtanh(x, 0.0, 6.0)\n";
  }

  void line(const std::string& s) { src_ << "        " << s << "\n"; }

  torch::jit::Module finish() {
    module_.define("    def forward(self, x: Tensor) -> Tensor:\n" + src_.str() +
                   "        return torch.mean(x, [2, 3])\n");
    return module_;
  }

 private:
  const Weights& w_;
  torch::jit::Module module_;
  std::ostringstream src_;
  int count_ = 0;
};

}  // namespace

torch::jit::Module build_mobilenet_v2(const Weights& w) {
  Builder b(w);
  b.conv_bn("Conv1", "bn_Conv1", 3, 32, 3, 2, false, true);
  // (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
  const int config[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                            {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int in = 32, block = 0;
  for (const auto& [t, c, n, s] : config) {
    for (int i = 0; i < n; ++i, ++block) {
      const int stride = i == 0 ? s : 1, hidden = in * t;
      const std::string name = block == 0 ? "expanded_conv" : "block_" + std::to_string(block);
      const bool residual = stride == 1 && in == c;
      if (residual) b.line("shortcut = x");
      if (block > 0) b.conv_bn(name + "_expand", name + "_expand_BN", in, hidden, 1, 1, false, true);
      b.conv_bn(name + "_depthwise", name + "_depthwise_BN", hidden, hidden, 3, stride, true, true);
      b.conv_bn(name + "_project", name + "_project_BN", hidden, c, 1, 1, false, false);
      if (residual) b.line("x = x + shortcut");
      in = c;
    }
  }
  b.conv_bn("Conv_1", "Conv_1_bn", 320, kEmbeddingDim, 1, 1, false, true);
  auto module = b.finish();
  module.eval();
  return torch::jit::freeze(module);
}

}  // namespace orchard::model
