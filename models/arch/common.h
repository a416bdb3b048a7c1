// Building blocks shared by the architecture sources (private to models/).
#pragma once

#include <torch/nn.h>

#include <functional>

#include "../architectures.h"
#include "../registry.h"

namespace ptm::arch {

enum class Act { None, ReLU, ReLU6, Hardswish, Hardsigmoid, SiLU, Sigmoid, GELU };

inline at::Tensor activate(Act a, at::Tensor x) {
  switch (a) {
    case Act::None: return x;
    case Act::ReLU: return torch::relu(x);
    case Act::ReLU6: return torch::hardtanh(x, 0.0, 6.0);
    case Act::Hardswish: return torch::hardswish(x);
    case Act::Hardsigmoid: return torch::hardsigmoid(x);
    case Act::SiLU: return torch::silu(x);
    case Act::Sigmoid: return torch::sigmoid(x);
    case Act::GELU: return torch::gelu(x);
  }
  return x;
}

// at::linear (x times w transposed, plus b) and at::matmul, on oneDNN for
// float32 on the CPU where LibTorch runs on the system's oneDNN (matmul.cpp
// says why; the transformers' and ConvNeXt's layers). Shapes as at::linear
// and at::matmul; matmul's operands have the same batch dimensions, or b is
// one matrix.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});
// GELU(linear(x, w, b)), GELU computed in the product's kernel on oneDNN.
at::Tensor linear_gelu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});
// linear(x, w, b) + other (the result's shape), the sum in the product's
// kernel on oneDNN (a residual connection with no pass of its own).
at::Tensor linear_add(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& other);
at::Tensor matmul(const at::Tensor& a, const at::Tensor& b);
struct Norm {
  double eps = 1e-5;
  double momentum = 0.1;
};

// False while create_architecture builds a module a checkpoint then fills
// whole (ArchInit::Empty): the random initialisation is skipped (for
// vit_h_14 it took 11 s of a 17 s load), parameters are left unset.
bool& random_init();

// torch::nn::Linear and torch::nn::Conv2d (same keys, options, forward and
// default initialisation) whose initialisation follows random_init().
class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in, int64_t out) : LinearImpl(torch::nn::LinearOptions(in, out)) {}
  explicit LinearImpl(const torch::nn::LinearOptions& o) : options(o) { reset(); }
  void reset() override {
    weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
    bias = options.bias() ? register_parameter("bias", torch::empty(options.out_features()))
                          : register_parameter("bias", {}, false);
    if (random_init()) default_init(weight, bias);
  }
  at::Tensor forward(const at::Tensor& x) { return at::linear(x, weight, bias); }
  // torch.nn's default: kaiming_uniform_(a = sqrt(5)), bias U(+-1/sqrt(fan_in)).
  static void default_init(at::Tensor& weight, at::Tensor& bias) {
    at::NoGradGuard ng;
    torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (bias.defined()) {
      const double bound = 1.0 / std::sqrt(double(weight.numel() / weight.size(0)));
      torch::nn::init::uniform_(bias, -bound, bound);
    }
  }

  torch::nn::LinearOptions options;
  at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

class Conv2dImpl : public torch::nn::Cloneable<Conv2dImpl> {
 public:
  explicit Conv2dImpl(const torch::nn::Conv2dOptions& o) : options(o) { reset(); }
  void reset() override {
    const auto& k = options.kernel_size();
    weight = register_parameter(
        "weight", torch::empty({options.out_channels(), options.in_channels() / options.groups(), k->at(0), k->at(1)}));
    bias = options.bias() ? register_parameter("bias", torch::empty(options.out_channels()))
                          : register_parameter("bias", {}, false);
    if (random_init()) LinearImpl::default_init(weight, bias);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::nn::functional::detail::conv2d(x, weight, bias, options.stride(), options.padding(),
                                                 options.dilation(), options.groups());
  }

  torch::nn::Conv2dOptions options;
  at::Tensor weight, bias;
};
TORCH_MODULE(Conv2d);

// conv(x), recorded in a trace as ptm::conv2d: LibTorch's oneDNN graph
// conversion leaves it dense, so a channels-last input gives a
// channels-last output with no reorder (matmul.cpp says why; ConvNeXt).
at::Tensor conv2d_dense(const at::Tensor& x, const Conv2d& conv);

inline Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1,
                              int64_t padding = 0, int64_t groups = 1, bool bias = false,
                              int64_t dilation = 1) {
  return Conv2d(torch::nn::Conv2dOptions(in, out, k)
                               .stride(stride)
                               .padding(padding)
                               .groups(groups)
                               .bias(bias)
                               .dilation(dilation));
}

inline torch::nn::BatchNorm2d batchnorm(int64_t c, Norm n = {}) {
  return torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(c).eps(n.eps).momentum(n.momentum));
}

// torchvision.ops.Conv2dNormActivation: keys "0" (conv) and "1" (norm).
class ConvNormActImpl : public torch::nn::Module {
 public:
  ConvNormActImpl(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, Act act,
                  Norm norm = {}, int64_t dilation = 1)
      : act_(act) {
    conv_ = register_module("0", conv(in, out, k, stride, (k - 1) / 2 * dilation, groups, false, dilation));
    bn_ = register_module("1", batchnorm(out, norm));
  }
  at::Tensor forward(const at::Tensor& x) { return activate(act_, bn_(conv_(x))); }

 private:
  Act act_;
  Conv2d conv_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
};
TORCH_MODULE(ConvNormAct);

// timm's ConvNormAct (timm.layers): keys "conv" and "bn", timm's symmetric
// padding ((stride - 1) + (k - 1)) / 2.
class TimmConvNormActImpl : public torch::nn::Module {
 public:
  TimmConvNormActImpl(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, Act act) : act_(act) {
    conv_ = register_module("conv", conv(in, out, k, stride, ((stride - 1) + (k - 1)) / 2, groups));
    bn_ = register_module("bn", batchnorm(out));
  }
  at::Tensor forward(const at::Tensor& x) { return activate(act_, bn_(conv_(x))); }

 private:
  Act act_;
  Conv2d conv_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
};
TORCH_MODULE(TimmConvNormAct);

// torchvision.ops.SqueezeExcitation (fc1, fc2 are 1x1 convolutions).
class SqueezeExcitationImpl : public torch::nn::Module {
 public:
  SqueezeExcitationImpl(int64_t channels, int64_t squeeze, Act act, Act scale_act)
      : act_(act), scale_act_(scale_act) {
    fc1 = register_module("fc1", conv(channels, squeeze, 1, 1, 0, 1, true));
    fc2 = register_module("fc2", conv(squeeze, channels, 1, 1, 0, 1, true));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor s = torch::adaptive_avg_pool2d(x, {1, 1});
    s = activate(scale_act_, fc2(activate(act_, fc1(s))));
    return x * s;
  }
  Conv2d fc1{nullptr}, fc2{nullptr};

 private:
  Act act_, scale_act_;
};
TORCH_MODULE(SqueezeExcitation);

// torchvision's _make_divisible (from the TensorFlow MobileNet code).
inline int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t nv = std::max<int64_t>(divisor, int64_t(v + divisor / 2.0) / divisor * divisor);
  if (nv < 0.9 * v) nv += divisor;
  return nv;
}

// A sequence of modules registered under "0", "1", ... run in order
// (torch::nn::Sequential's key layout without its type-erased dispatch).
template <typename Block>
class Chain : public torch::nn::Module {
 public:
  void push_back(Block b) { blocks_.push_back(register_module(std::to_string(blocks_.size()), b)); }
  at::Tensor forward(at::Tensor x) {
    for (auto& b : blocks_) x = b->forward(x);
    return x;
  }
  size_t size() const { return blocks_.size(); }

 private:
  std::vector<Block> blocks_;
};
template <typename Block>
using ChainPtr = std::shared_ptr<Chain<Block>>;

// A Sequential of heterogeneous blocks, each with forward(Tensor), under
// "0", "1", ...
class Blocks : public torch::nn::Module {
 public:
  template <typename M>
  void add(std::shared_ptr<M> m) {
    register_module(std::to_string(fns_.size()), m);
    fns_.push_back([m](const at::Tensor& x) { return m->forward(x); });
  }
  at::Tensor forward(at::Tensor x) {
    for (auto& f : fns_) x = f(x);
    return x;
  }

 private:
  std::vector<std::function<at::Tensor(const at::Tensor&)>> fns_;
};

}  // namespace ptm::arch
