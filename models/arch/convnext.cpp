// torchvision.models.convnext: ConvNeXt (tiny, small, base, large), and
// timm's ConvNeXt of the same sizes under timm's names (timm/convnext_*).
#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

constexpr double kLayerNormEps = 1e-6;

// LayerNorm over the channels of an NCHW tensor, computed channels-last as
// torchvision does (its LayerNorm2d and the norm inside CNBlock).
at::Tensor channel_norm(const at::Tensor& x, torch::nn::LayerNorm ln) {
  return ln(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
}

torch::nn::LayerNorm layer_norm(int64_t channels) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels}).eps(kLayerNormEps));
}

// features.0: a 4x4 stride-4 patchify convolution, then LayerNorm2d
// (torchvision's Conv2dNormActivation with bias and no activation).
class Stem : public torch::nn::Module {
 public:
  explicit Stem(int64_t out) {
    conv_ = register_module("0", conv(3, out, 4, 4, 0, 1, true));
    norm_ = register_module("1", layer_norm(out));
  }
  at::Tensor forward(const at::Tensor& x) { return channel_norm(conv2d_dense(x, conv_), norm_); }

 private:
  Conv2d conv_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
};

// Between stages: LayerNorm2d, then a 2x2 stride-2 convolution.
class Downsample : public torch::nn::Module {
 public:
  Downsample(int64_t in, int64_t out) {
    norm_ = register_module("0", layer_norm(in));
    conv_ = register_module("1", conv(in, out, 2, 2, 0, 1, true));
  }
  at::Tensor forward(const at::Tensor& x) { return conv2d_dense(channel_norm(x, norm_), conv_); }

 private:
  torch::nn::LayerNorm norm_{nullptr};
  Conv2d conv_{nullptr};
};

// A ConvNeXt block: the depthwise convolution `dw`, then LayerNorm and the
// MLP (Linear, GELU, Linear) on each pixel, its output scaled per channel
// by `scale` (C) and added to x. Channels-last from end to end: the
// convolution kept dense (conv2d_dense: no reorder to oneDNN's blocked
// layout and back), so the LayerNorm and the products read its rows
// (N, H, W, C) in place; the products on oneDNN with GELU in the first
// one's kernel (a separate GELU took a fifth of the model's time, the
// reference BLAS a Linear on (N, H, W, C) would go to some 40x more), the
// scale taken into the second one's weights and bias (scale * (W h + b) =
// (scale W) h + scale b: a graph's freeze computes those once) and the
// residual added in its kernel. An NCHW view of the result.
at::Tensor block(const at::Tensor& x, const Conv2d& dw, torch::nn::LayerNorm& norm, const Linear& fc1,
                 const Linear& fc2, const at::Tensor& scale) {
  at::Tensor y = norm(conv2d_dense(x, dw).permute({0, 2, 3, 1}));
  y = linear_gelu(y, fc1->weight, fc1->bias);
  y = linear_add(y, fc2->weight * scale.unsqueeze(1), fc2->bias * scale, x.permute({0, 2, 3, 1}));
  return y.permute({0, 3, 1, 2});
}

// Depthwise 7x7, then LayerNorm and an MLP per pixel, scaled per channel
// and added to the input. torchvision's `block` Sequential holds parameter-
// free modules too (permutes, GELU), so its parameters sit at 0, 2, 3, 5.
// Stochastic depth is the identity in eval.
class CNBlock : public torch::nn::Module {
 public:
  explicit CNBlock(int64_t dim) {
    auto block = register_module("block", std::make_shared<torch::nn::Module>());
    dwconv_ = block->register_module("0", conv(dim, dim, 7, 1, 3, dim, true));
    norm_ = block->register_module("2", layer_norm(dim));
    fc1_ = block->register_module("3", Linear(dim, 4 * dim));
    fc2_ = block->register_module("5", Linear(4 * dim, dim));
    layer_scale = register_parameter("layer_scale", torch::full({dim, 1, 1}, 1e-6));
  }
  at::Tensor forward(const at::Tensor& x) {
    return block(x, dwconv_, norm_, fc1_, fc2_, layer_scale.view({-1}));
  }
  at::Tensor layer_scale;

 private:
  Conv2d dwconv_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  Linear fc1_{nullptr}, fc2_{nullptr};
};

struct Stage {
  int64_t dim, depth;
};

// timm's ConvNeXtBlock (conv_mlp off): conv_dw, norm, mlp.fc1/fc2, and the
// per-channel scale gamma, a vector.
class TimmBlock : public torch::nn::Module {
 public:
  explicit TimmBlock(int64_t dim) {
    conv_dw_ = register_module("conv_dw", conv(dim, dim, 7, 1, 3, dim, true));
    norm_ = register_module("norm", layer_norm(dim));
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    fc1_ = mlp->register_module("fc1", Linear(dim, 4 * dim));
    fc2_ = mlp->register_module("fc2", Linear(4 * dim, dim));
    gamma = register_parameter("gamma", torch::full({dim}, 1e-6));
  }
  at::Tensor forward(const at::Tensor& x) {
    return block(x, conv_dw_, norm_, fc1_, fc2_, gamma);
  }
  at::Tensor gamma;

 private:
  Conv2d conv_dw_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
  Linear fc1_{nullptr}, fc2_{nullptr};
};

// timm's ConvNeXtStage: downsample (from the second stage on), blocks.
class TimmStage : public torch::nn::Module {
 public:
  TimmStage(int64_t in, const Stage& s) {
    if (in != s.dim) down_ = register_module("downsample", std::make_shared<Downsample>(in, s.dim));
    blocks_ = register_module("blocks", std::make_shared<Chain<std::shared_ptr<TimmBlock>>>());
    for (int64_t i = 0; i < s.depth; ++i) blocks_->push_back(std::make_shared<TimmBlock>(s.dim));
  }
  at::Tensor forward(const at::Tensor& x) { return blocks_->forward(down_ ? down_->forward(x) : x); }

 private:
  std::shared_ptr<Downsample> down_;
  std::shared_ptr<Chain<std::shared_ptr<TimmBlock>>> blocks_;
};

// timm.models.convnext.ConvNeXt: stem, stages, and the NormMlpClassifierHead
// (average pool, LayerNorm2d, fc) as head.norm and head.fc.
class TimmConvNeXt : public ClassifierModuleImpl {
 public:
  TimmConvNeXt(const std::vector<Stage>& stages, int64_t n) {
    stem_ = register_module("stem", std::make_shared<Stem>(stages.front().dim));
    auto all = register_module("stages", std::make_shared<Blocks>());
    int64_t in = stages.front().dim;
    for (const auto& s : stages) {
      all->add(std::make_shared<TimmStage>(in, s));
      in = s.dim;
    }
    stages_ = all;
    auto head = register_module("head", std::make_shared<torch::nn::Module>());
    norm_ = head->register_module("norm", layer_norm(in));
    fc_ = head->register_module("fc", Linear(in, n));
  }
  at::Tensor embed(const at::Tensor& x) override {
    at::Tensor f = torch::adaptive_avg_pool2d(stages_->forward(stem_->forward(x)), {1, 1});
    return channel_norm(f, norm_).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return fc_(f); }

 private:
  std::shared_ptr<Stem> stem_;
  std::shared_ptr<Blocks> stages_;
  torch::nn::LayerNorm norm_{nullptr};
  Linear fc_{nullptr};
};

class ConvNeXt : public ClassifierModuleImpl {
 public:
  // A downsampling layer between consecutive stages.
  ConvNeXt(const std::vector<Stage>& stages, int64_t n) {
    features = register_module("features", std::make_shared<Blocks>());
    features->add(std::make_shared<Stem>(stages.front().dim));
    for (size_t s = 0; s < stages.size(); ++s) {
      auto stage = std::make_shared<Chain<std::shared_ptr<CNBlock>>>();
      for (int64_t i = 0; i < stages[s].depth; ++i) stage->push_back(std::make_shared<CNBlock>(stages[s].dim));
      features->add(stage);
      if (s + 1 < stages.size()) features->add(std::make_shared<Downsample>(stages[s].dim, stages[s + 1].dim));
    }
    const int64_t last = stages.back().dim;
    auto classifier = register_module("classifier", std::make_shared<torch::nn::Module>());
    norm_ = classifier->register_module("0", layer_norm(last));
    fc_ = classifier->register_module("2", Linear(last, n));
  }
  at::Tensor embed(const at::Tensor& x) override {
    at::Tensor f = torch::adaptive_avg_pool2d(features->forward(x), {1, 1});
    return channel_norm(f, norm_).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return fc_(f); }
  std::shared_ptr<Blocks> features;

 private:
  torch::nn::LayerNorm norm_{nullptr};
  Linear fc_{nullptr};
};

}  // namespace

ClassifierModulePtr make_convnext(const std::string& name, const ArchParams& p) {
  const bool timm = name.rfind("timm/", 0) == 0;
  const std::string size = timm ? name.substr(5) : name;
  auto stages = [&]() -> std::vector<Stage> {
    if (size == "convnext_tiny") return {{96, 3}, {192, 3}, {384, 9}, {768, 3}};
    if (size == "convnext_small") return {{96, 3}, {192, 3}, {384, 27}, {768, 3}};
    if (size == "convnext_base") return {{128, 3}, {256, 3}, {512, 27}, {1024, 3}};
    if (size == "convnext_large") return {{192, 3}, {384, 3}, {768, 27}, {1536, 3}};
    throw ModelError("unknown convnext variant '" + name + "' (convnext_tiny, _small, _base or _large)");
  };
  if (timm) return std::make_shared<TimmConvNeXt>(stages(), p.num_classes);
  return std::make_shared<ConvNeXt>(stages(), p.num_classes);
}

}  // namespace ptm::arch
