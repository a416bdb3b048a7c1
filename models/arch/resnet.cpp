// torchvision.models.resnet: ResNet (v1.5: stride in the 3x3 conv),
// ResNeXt and Wide ResNet; and timm's ResNet-D (resnet*d: a deep 3x3 stem
// and average-pooled shortcuts), whose other keys are torchvision's.
#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

struct BlockConfig {
  int64_t inplanes, planes, stride, groups, base_width;
  bool downsample;
  bool avg_down = false;  // ResNet-D's shortcut: 2x2 average pool, then a 1x1 conv
};

class ResidualBlock : public torch::nn::Module {
 public:
  virtual at::Tensor forward(at::Tensor x) = 0;
};
using ResidualBlockPtr = std::shared_ptr<ResidualBlock>;

// The shortcut's projection: a strided 1x1 conv and BatchNorm ("0", "1"),
// or timm's downsample_avg: AvgPool2d(2, stride, ceil_mode, no padding
// counted) where the stride is 2 (an Identity otherwise), then a 1x1 conv
// and BatchNorm ("1", "2").
class Downsample : public torch::nn::Module {
 public:
  Downsample(int64_t in, int64_t out, int64_t stride, bool avg) : pool_(avg && stride > 1), stride_(stride) {
    conv_ = register_module(avg ? "1" : "0", conv(in, out, 1, avg ? 1 : stride));
    bn_ = register_module(avg ? "2" : "1", batchnorm(out));
  }
  at::Tensor forward(const at::Tensor& x) {
    if (!pool_) return bn_(conv_(x));
    return bn_(conv_(torch::avg_pool2d(x, {2, 2}, {stride_, stride_}, {0, 0}, /*ceil_mode=*/true,
                                       /*count_include_pad=*/false)));
  }

 private:
  bool pool_;
  int64_t stride_;
  Conv2d conv_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
};

// ResNet-D's stem: three 3x3 convs (the first strided) with BatchNorm and
// ReLU between them; the stem's last BatchNorm is the network's bn1.
class DeepStem : public torch::nn::Module {
 public:
  DeepStem(int64_t width, int64_t out) {
    c0_ = register_module("0", conv(3, width, 3, 2, 1));
    b1_ = register_module("1", batchnorm(width));
    c3_ = register_module("3", conv(width, width, 3, 1, 1));
    b4_ = register_module("4", batchnorm(width));
    c6_ = register_module("6", conv(width, out, 3, 1, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    return c6_(torch::relu(b4_(c3_(torch::relu(b1_(c0_(x)))))));
  }

 private:
  Conv2d c0_{nullptr}, c3_{nullptr}, c6_{nullptr};
  torch::nn::BatchNorm2d b1_{nullptr}, b4_{nullptr};
};

class BasicBlock : public ResidualBlock {
 public:
  static constexpr int64_t expansion = 1;
  explicit BasicBlock(const BlockConfig& c) {
    conv1 = register_module("conv1", conv(c.inplanes, c.planes, 3, c.stride, 1));
    bn1 = register_module("bn1", batchnorm(c.planes));
    conv2 = register_module("conv2", conv(c.planes, c.planes, 3, 1, 1));
    bn2 = register_module("bn2", batchnorm(c.planes));
    if (c.downsample)
      downsample =
          register_module("downsample", std::make_shared<Downsample>(c.inplanes, c.planes, c.stride, c.avg_down));
  }
  at::Tensor forward(at::Tensor x) override {
    at::Tensor out = torch::relu(bn1(conv1(x)));
    out = bn2(conv2(out));
    out += downsample ? downsample->forward(x) : x;
    return torch::relu(out);
  }
  Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  std::shared_ptr<Downsample> downsample;
};

class Bottleneck : public ResidualBlock {
 public:
  static constexpr int64_t expansion = 4;
  explicit Bottleneck(const BlockConfig& c) {
    const int64_t width = c.planes * c.base_width / 64 * c.groups;
    conv1 = register_module("conv1", conv(c.inplanes, width, 1));
    bn1 = register_module("bn1", batchnorm(width));
    conv2 = register_module("conv2", conv(width, width, 3, c.stride, 1, c.groups));
    bn2 = register_module("bn2", batchnorm(width));
    conv3 = register_module("conv3", conv(width, c.planes * expansion, 1));
    bn3 = register_module("bn3", batchnorm(c.planes * expansion));
    if (c.downsample)
      downsample = register_module(
          "downsample", std::make_shared<Downsample>(c.inplanes, c.planes * expansion, c.stride, c.avg_down));
  }
  at::Tensor forward(at::Tensor x) override {
    at::Tensor out = torch::relu(bn1(conv1(x)));
    out = torch::relu(bn2(conv2(out)));
    out = bn3(conv3(out));
    out += downsample ? downsample->forward(x) : x;
    return torch::relu(out);
  }
  Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  std::shared_ptr<Downsample> downsample;
};

class ResNetImpl : public ClassifierModuleImpl {
 public:
  template <typename B>
  static std::shared_ptr<ResNetImpl> make(std::array<int64_t, 4> layers, int64_t num_classes,
                                          int64_t groups, int64_t width_per_group, bool resnet_d = false) {
    auto m = std::make_shared<ResNetImpl>();
    if (resnet_d) m->deep_stem = m->register_module("conv1", std::make_shared<DeepStem>(32, 64));
    else m->conv1 = m->register_module("conv1", conv(3, 64, 7, 2, 3));
    m->bn1 = m->register_module("bn1", batchnorm(64));
    int64_t inplanes = 64;
    const int64_t planes[] = {64, 128, 256, 512};
    for (int s = 0; s < 4; ++s) {
      auto layer = std::make_shared<Chain<ResidualBlockPtr>>();
      const int64_t stride = s == 0 ? 1 : 2;
      for (int64_t b = 0; b < layers[s]; ++b) {
        BlockConfig c{inplanes, planes[s], b == 0 ? stride : 1, groups, width_per_group,
                      b == 0 && (stride != 1 || inplanes != planes[s] * B::expansion), resnet_d};
        layer->push_back(std::make_shared<B>(c));
        inplanes = planes[s] * B::expansion;
      }
      m->layers_[s] = m->register_module("layer" + std::to_string(s + 1), layer);
    }
    m->fc = m->register_module("fc", Linear(512 * B::expansion, num_classes));
    return m;
  }

  at::Tensor embed(const at::Tensor& input) override {
    at::Tensor x = torch::relu(bn1(deep_stem ? deep_stem->forward(input) : conv1(input)));
    x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& l : layers_) x = l->forward(x);
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return fc(f); }

  Conv2d conv1{nullptr};  // or, in ResNet-D:
  std::shared_ptr<DeepStem> deep_stem;
  torch::nn::BatchNorm2d bn1{nullptr};
  Linear fc{nullptr};

 private:
  std::array<ChainPtr<ResidualBlockPtr>, 4> layers_;
};

}  // namespace

ClassifierModulePtr make_resnet(const std::string& name, const ArchParams& p) {
  const int64_t n = p.num_classes;
  if (name == "resnet18") return ResNetImpl::make<BasicBlock>({2, 2, 2, 2}, n, 1, 64);
  if (name == "resnet34") return ResNetImpl::make<BasicBlock>({3, 4, 6, 3}, n, 1, 64);
  if (name == "resnet50") return ResNetImpl::make<Bottleneck>({3, 4, 6, 3}, n, 1, 64);
  if (name == "resnet101") return ResNetImpl::make<Bottleneck>({3, 4, 23, 3}, n, 1, 64);
  if (name == "resnet152") return ResNetImpl::make<Bottleneck>({3, 8, 36, 3}, n, 1, 64);
  if (name == "resnext50_32x4d") return ResNetImpl::make<Bottleneck>({3, 4, 6, 3}, n, 32, 4);
  if (name == "wide_resnet50_2") return ResNetImpl::make<Bottleneck>({3, 4, 6, 3}, n, 1, 128);
  if (name == "resnext101_32x8d") return ResNetImpl::make<Bottleneck>({3, 4, 23, 3}, n, 32, 8);
  if (name == "resnext101_64x4d") return ResNetImpl::make<Bottleneck>({3, 4, 23, 3}, n, 64, 4);
  if (name == "wide_resnet101_2") return ResNetImpl::make<Bottleneck>({3, 4, 23, 3}, n, 1, 128);
  if (name == "resnet18d") return ResNetImpl::make<BasicBlock>({2, 2, 2, 2}, n, 1, 64, true);
  if (name == "resnet34d") return ResNetImpl::make<BasicBlock>({3, 4, 6, 3}, n, 1, 64, true);
  if (name == "resnet26d") return ResNetImpl::make<Bottleneck>({2, 2, 2, 2}, n, 1, 64, true);
  if (name == "resnet50d") return ResNetImpl::make<Bottleneck>({3, 4, 6, 3}, n, 1, 64, true);
  if (name == "resnet101d") return ResNetImpl::make<Bottleneck>({3, 4, 23, 3}, n, 1, 64, true);
  if (name == "resnet152d") return ResNetImpl::make<Bottleneck>({3, 8, 36, 3}, n, 1, 64, true);
  throw ModelError("unknown resnet variant '" + name + "'");
}

}  // namespace ptm::arch
