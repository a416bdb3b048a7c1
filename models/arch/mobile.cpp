// torchvision.models.{mobilenetv2, mobilenetv3, efficientnet (v1, v2), mnasnet}:
// inverted residual networks.
#include <cmath>
#include <map>

#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

using Block = std::shared_ptr<torch::nn::Module>;

std::shared_ptr<ConvNormActImpl> cna(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups,
                                     Act act, Norm norm = {}, int64_t dilation = 1) {
  return std::make_shared<ConvNormActImpl>(in, out, k, stride, groups, act, norm, dilation);
}

// An inverted-residual block: its layers under `name`, plus the input
// when stride and channels allow (shared by MobileNetV2/V3 and MBConv).
class InvertedResidualBase : public torch::nn::Module {
 public:
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = body_->forward(x);
    if (!residual_) return y;
    return input_first_ ? x + y : y + x;  // torchvision's operand order, for bit-identical sums
  }

 protected:
  void set_body(const std::string& name, std::shared_ptr<Blocks> body, bool residual, bool input_first = false) {
    body_ = register_module(name, std::move(body));
    residual_ = residual;
    input_first_ = input_first;
  }

 private:
  std::shared_ptr<Blocks> body_;
  bool residual_ = false, input_first_ = false;
};

// ---- MobileNetV2

class InvertedResidualV2 : public InvertedResidualBase {
 public:
  InvertedResidualV2(int64_t inp, int64_t oup, int64_t stride, int64_t expand) {
    const int64_t hidden = int64_t(std::round(double(inp) * expand));
    auto c = std::make_shared<Blocks>();
    if (expand != 1) c->add(cna(inp, hidden, 1, 1, 1, Act::ReLU6));
    c->add(cna(hidden, hidden, 3, stride, hidden, Act::ReLU6));
    c->add(conv(hidden, oup, 1).ptr());
    c->add(batchnorm(oup).ptr());
    set_body("conv", c, stride == 1 && inp == oup, true);
  }
};

class MobileNetV2 : public ClassifierModuleImpl {
 public:
  explicit MobileNetV2(int64_t n) {
    const int64_t settings[][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                   {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    features = std::make_shared<Blocks>();
    int64_t in = make_divisible(32);
    const int64_t last = make_divisible(1280);
    features->add(cna(3, in, 3, 2, 1, Act::ReLU6));
    for (const auto& s : settings) {
      const int64_t out = make_divisible(double(s[1]));
      for (int64_t i = 0; i < s[2]; ++i) {
        features->add(std::make_shared<InvertedResidualV2>(in, out, i == 0 ? s[3] : 1, s[0]));
        in = out;
      }
    }
    features->add(cna(in, last, 1, 1, 1, Act::ReLU6));
    register_module("features", features);
    auto c = std::make_shared<Blocks>();
    fc_ = Linear(last, n);
    register_module("classifier", c);
    c->register_module("1", fc_);
  }
  at::Tensor embed(const at::Tensor& x) override {
    return torch::adaptive_avg_pool2d(features->forward(x), {1, 1}).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return fc_(f); }
  std::shared_ptr<Blocks> features;

 private:
  Linear fc_{nullptr};
};

// ---- MobileNetV3

struct V3Config {
  int64_t in, k, exp, out;
  bool se;
  bool hs;
  int64_t stride;
};

class InvertedResidualV3 : public InvertedResidualBase {
 public:
  explicit InvertedResidualV3(const V3Config& c) {
    const Norm bn{0.001, 0.01};
    const Act act = c.hs ? Act::Hardswish : Act::ReLU;
    auto b = std::make_shared<Blocks>();
    if (c.exp != c.in) b->add(cna(c.in, c.exp, 1, 1, 1, act, bn));
    b->add(cna(c.exp, c.exp, c.k, c.stride, c.exp, act, bn));
    if (c.se)
      b->add(std::make_shared<SqueezeExcitationImpl>(c.exp, make_divisible(double(c.exp / 4)), Act::ReLU,
                                                     Act::Hardsigmoid));
    b->add(cna(c.exp, c.out, 1, 1, 1, Act::None, bn));
    set_body("block", b, c.stride == 1 && c.in == c.out);
  }
};

class MobileNetV3 : public ClassifierModuleImpl {
 public:
  MobileNetV3(const std::vector<V3Config>& cfg, int64_t last_channel, int64_t n) {
    const Norm bn{0.001, 0.01};
    features = std::make_shared<Blocks>();
    features->add(cna(3, cfg.front().in, 3, 2, 1, Act::Hardswish, bn));
    for (const auto& c : cfg) features->add(std::make_shared<InvertedResidualV3>(c));
    const int64_t last_in = cfg.back().out, last_out = 6 * last_in;
    features->add(cna(last_in, last_out, 1, 1, 1, Act::Hardswish, bn));
    register_module("features", features);
    auto c = std::make_shared<Blocks>();
    fc0_ = c->register_module("0", Linear(last_out, last_channel));
    fc3_ = c->register_module("3", Linear(last_channel, n));
    register_module("classifier", c);
  }
  at::Tensor embed(const at::Tensor& x) override {
    at::Tensor f = torch::adaptive_avg_pool2d(features->forward(x), {1, 1}).flatten(1);
    return torch::hardswish(fc0_(f));
  }
  at::Tensor logits(const at::Tensor& f) override { return fc3_(f); }
  std::shared_ptr<Blocks> features;

 private:
  Linear fc0_{nullptr}, fc3_{nullptr};
};

// ---- EfficientNet (v1 and v2)

// One stage: `layers` blocks, the first taking `in` channels at `stride`.
struct MBConfig {
  int64_t expand, k, stride, in, out, layers;
  bool fused = false;  // v2's FusedMBConv (a full convolution instead of 1x1 + depthwise)
};

// Stochastic depth is the identity in eval, so MBConv and FusedMBConv are
// plain inverted residuals here.
class MBConv : public InvertedResidualBase {
 public:
  MBConv(const MBConfig& c, Norm bn) {
    const int64_t expanded = make_divisible(double(c.in * c.expand));
    auto b = std::make_shared<Blocks>();
    if (expanded != c.in) b->add(cna(c.in, expanded, 1, 1, 1, Act::SiLU, bn));
    b->add(cna(expanded, expanded, c.k, c.stride, expanded, Act::SiLU, bn));
    b->add(std::make_shared<SqueezeExcitationImpl>(expanded, std::max<int64_t>(1, c.in / 4), Act::SiLU,
                                                   Act::Sigmoid));
    b->add(cna(expanded, c.out, 1, 1, 1, Act::None, bn));
    set_body("block", b, c.stride == 1 && c.in == c.out);
  }
};

class FusedMBConv : public InvertedResidualBase {
 public:
  FusedMBConv(const MBConfig& c, Norm bn) {
    const int64_t expanded = make_divisible(double(c.in * c.expand));
    auto b = std::make_shared<Blocks>();
    if (expanded != c.in) {
      b->add(cna(c.in, expanded, c.k, c.stride, 1, Act::SiLU, bn));
      b->add(cna(expanded, c.out, 1, 1, 1, Act::None, bn));
    } else {
      b->add(cna(c.in, c.out, c.k, c.stride, 1, Act::SiLU, bn));
    }
    set_body("block", b, c.stride == 1 && c.in == c.out);
  }
};

class EfficientNet : public ClassifierModuleImpl {
 public:
  // `stages` with their final channel and layer counts; `last` channels
  // before the head.
  EfficientNet(const std::vector<MBConfig>& stages, int64_t last, Norm bn, int64_t n) {
    features = std::make_shared<Blocks>();
    features->add(cna(3, stages.front().in, 3, 2, 1, Act::SiLU, bn));
    for (const auto& s : stages) {
      auto stage = std::make_shared<Blocks>();
      for (int64_t i = 0; i < s.layers; ++i) {
        MBConfig c = s;
        c.in = i == 0 ? s.in : s.out;
        c.stride = i == 0 ? s.stride : 1;
        if (c.fused)
          stage->add(std::make_shared<FusedMBConv>(c, bn));
        else
          stage->add(std::make_shared<MBConv>(c, bn));
      }
      features->add(stage);
    }
    features->add(cna(stages.back().out, last, 1, 1, 1, Act::SiLU, bn));
    register_module("features", features);
    auto c = std::make_shared<Blocks>();
    fc_ = c->register_module("1", Linear(last, n));
    register_module("classifier", c);
  }
  at::Tensor embed(const at::Tensor& x) override {
    return torch::adaptive_avg_pool2d(features->forward(x), {1, 1}).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return fc_(f); }
  std::shared_ptr<Blocks> features;

 private:
  Linear fc_{nullptr};
};

// ---- MNASNet (B1). torchvision writes its layers out as plain Sequentials
// (ReLU slots take an index), not as Conv2dNormActivation blocks.

void add_conv_bn(Blocks& b, int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups, bool relu) {
  b.add(conv(in, out, k, stride, k / 2, groups).ptr());
  b.add(batchnorm(out).ptr());  // momentum 1 - 0.9997 in training; eval ignores it
  if (relu) b.add(torch::nn::ReLU().ptr());
}

class MnasInvertedResidual : public InvertedResidualBase {
 public:
  MnasInvertedResidual(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t expand) {
    const int64_t mid = in * expand;
    auto b = std::make_shared<Blocks>();
    add_conv_bn(*b, in, mid, 1, 1, 1, true);
    add_conv_bn(*b, mid, mid, k, stride, mid, true);
    add_conv_bn(*b, mid, out, 1, 1, 1, false);
    set_body("layers", b, in == out && stride == 1);
  }
};

// torchvision's _round_to_multiple_of: rounds up unless that would add more
// than about 10 % (bias 0.9), unlike make_divisible's round-to-nearest.
int64_t round_to_multiple_of(double v, int64_t divisor) {
  const int64_t nv = std::max<int64_t>(divisor, int64_t(v + divisor / 2.0) / divisor * divisor);
  return double(nv) >= 0.9 * v ? nv : nv + divisor;
}

class MNASNet : public ClassifierModuleImpl {
 public:
  MNASNet(double alpha, int64_t n) {
    int64_t d[8];
    const int64_t base[8] = {32, 16, 24, 40, 80, 96, 192, 320};
    for (int i = 0; i < 8; ++i) d[i] = round_to_multiple_of(double(base[i]) * alpha, 8);
    layers = std::make_shared<Blocks>();
    add_conv_bn(*layers, 3, d[0], 3, 2, 1, true);
    add_conv_bn(*layers, d[0], d[0], 3, 1, d[0], true);
    add_conv_bn(*layers, d[0], d[1], 1, 1, 1, false);
    // (kernel, stride, expansion, repeats) of each stack; its first block
    // takes the stride and the width change.
    const int64_t stacks[6][4] = {{3, 2, 3, 3}, {5, 2, 3, 3}, {5, 2, 6, 3}, {3, 1, 6, 2}, {5, 2, 6, 4}, {3, 1, 6, 1}};
    for (int s = 0; s < 6; ++s) {
      auto stack = std::make_shared<Blocks>();
      const auto& c = stacks[s];
      for (int64_t r = 0; r < c[3]; ++r)
        stack->add(std::make_shared<MnasInvertedResidual>(r == 0 ? d[s + 1] : d[s + 2], d[s + 2], c[0],
                                                          r == 0 ? c[1] : 1, c[2]));
      layers->add(stack);
    }
    add_conv_bn(*layers, d[7], 1280, 1, 1, 1, true);
    register_module("layers", layers);
    auto c = std::make_shared<Blocks>();
    fc_ = c->register_module("1", Linear(1280, n));  // "0" is the dropout
    register_module("classifier", c);
  }
  at::Tensor embed(const at::Tensor& x) override { return layers->forward(x).mean({2, 3}); }
  at::Tensor logits(const at::Tensor& f) override { return fc_(f); }
  std::shared_ptr<Blocks> layers;

 private:
  Linear fc_{nullptr};
};

// v1: one base table scaled in width (channels, rounded to multiples of 8)
// and depth (layers, rounded up).
std::shared_ptr<EfficientNet> efficientnet_v1(double width, double depth, Norm bn, int64_t n) {
  const MBConfig base[] = {{1, 3, 1, 32, 16, 1},  {6, 3, 2, 16, 24, 2},   {6, 5, 2, 24, 40, 2},
                           {6, 3, 2, 40, 80, 3},  {6, 5, 1, 80, 112, 3},  {6, 5, 2, 112, 192, 4},
                           {6, 3, 1, 192, 320, 1}};
  auto ch = [&](int64_t c) { return make_divisible(double(c) * width); };
  std::vector<MBConfig> stages;
  for (MBConfig s : base) {
    s.in = ch(s.in);
    s.out = ch(s.out);
    s.layers = int64_t(std::ceil(double(s.layers) * depth));
    stages.push_back(s);
  }
  return std::make_shared<EfficientNet>(stages, 4 * stages.back().out, bn, n);
}

// EfficientNetV2's stages as torchvision builds them (no width or depth
// scaling): expand, kernel, stride, in, out, layers, fused.
std::vector<MBConfig> efficientnet_v2_stages(const std::string& name) {
  const bool fused = true, mb = false;
  if (name == "efficientnet_v2_s")
    return {{1, 3, 1, 24, 24, 2, fused}, {4, 3, 2, 24, 48, 4, fused},  {4, 3, 2, 48, 64, 4, fused},
            {4, 3, 2, 64, 128, 6, mb},   {6, 3, 1, 128, 160, 9, mb},   {6, 3, 2, 160, 256, 15, mb}};
  if (name == "efficientnet_v2_m")
    return {{1, 3, 1, 24, 24, 3, fused}, {4, 3, 2, 24, 48, 5, fused},  {4, 3, 2, 48, 80, 5, fused},
            {4, 3, 2, 80, 160, 7, mb},   {6, 3, 1, 160, 176, 14, mb},  {6, 3, 2, 176, 304, 18, mb},
            {6, 3, 1, 304, 512, 5, mb}};
  if (name == "efficientnet_v2_l")
    return {{1, 3, 1, 32, 32, 4, fused}, {4, 3, 2, 32, 64, 7, fused},  {4, 3, 2, 64, 96, 7, fused},
            {4, 3, 2, 96, 192, 10, mb},  {6, 3, 1, 192, 224, 19, mb},  {6, 3, 2, 224, 384, 25, mb},
            {6, 3, 1, 384, 640, 7, mb}};
  throw ModelError("unknown efficientnet_v2 variant '" + name + "' (efficientnet_v2_s, _m or _l)");
}

}  // namespace

ClassifierModulePtr make_mobilenet_v2(const std::string&, const ArchParams& p) {
  return std::make_shared<MobileNetV2>(p.num_classes);
}

ClassifierModulePtr make_mobilenet_v3(const std::string& name, const ArchParams& p) {
  const int64_t n = p.num_classes;
  const bool F = false, T = true;
  if (name == "mobilenet_v3_large")
    return std::make_shared<MobileNetV3>(
        std::vector<V3Config>{{16, 3, 16, 16, F, F, 1},    {16, 3, 64, 24, F, F, 2},
                              {24, 3, 72, 24, F, F, 1},    {24, 5, 72, 40, T, F, 2},
                              {40, 5, 120, 40, T, F, 1},   {40, 5, 120, 40, T, F, 1},
                              {40, 3, 240, 80, F, T, 2},   {80, 3, 200, 80, F, T, 1},
                              {80, 3, 184, 80, F, T, 1},   {80, 3, 184, 80, F, T, 1},
                              {80, 3, 480, 112, T, T, 1},  {112, 3, 672, 112, T, T, 1},
                              {112, 5, 672, 160, T, T, 2}, {160, 5, 960, 160, T, T, 1},
                              {160, 5, 960, 160, T, T, 1}},
        1280, n);
  if (name == "mobilenet_v3_small")
    return std::make_shared<MobileNetV3>(
        std::vector<V3Config>{{16, 3, 16, 16, T, F, 2},  {16, 3, 72, 24, F, F, 2},  {24, 3, 88, 24, F, F, 1},
                              {24, 5, 96, 40, T, T, 2},  {40, 5, 240, 40, T, T, 1}, {40, 5, 240, 40, T, T, 1},
                              {40, 5, 120, 48, T, T, 1}, {48, 5, 144, 48, T, T, 1}, {48, 5, 288, 96, T, T, 2},
                              {96, 5, 576, 96, T, T, 1}, {96, 5, 576, 96, T, T, 1}},
        1024, n);
  throw ModelError("unknown mobilenet_v3 variant '" + name + "'");
}

ClassifierModulePtr make_efficientnet(const std::string& name, const ArchParams& p) {
  struct P {
    double w, d;
  };
  const P params[] = {{1.0, 1.0}, {1.0, 1.1}, {1.1, 1.2}, {1.2, 1.4},
                      {1.4, 1.8}, {1.6, 2.2}, {1.8, 2.6}, {2.0, 3.1}};
  if (name.size() != 15 || name.compare(0, 14, "efficientnet_b") != 0 || name[14] < '0' || name[14] > '7')
    throw ModelError("unknown efficientnet variant '" + name + "'");
  const int b = name[14] - '0';
  // b5-b7 use BatchNorm(eps=1e-3, momentum=0.01), b0-b4 PyTorch's default.
  const Norm bn = b >= 5 ? Norm{0.001, 0.01} : Norm{};
  return efficientnet_v1(params[b].w, params[b].d, bn, p.num_classes);
}

ClassifierModulePtr make_efficientnet_v2(const std::string& name, const ArchParams& p) {
  // Last channel 1280; BatchNorm eps 1e-3 (momentum PyTorch's default).
  return std::make_shared<EfficientNet>(efficientnet_v2_stages(name), 1280, Norm{0.001, 0.1}, p.num_classes);
}

ClassifierModulePtr make_mnasnet(const std::string& name, const ArchParams& p) {
  // Checkpoints of torchvision's current layout (state-dict _version 2, stem
  // widths scaled by alpha); version-1 files of 0_5/0_75/1_3 have a fixed
  // 32/16 stem and do not match these shapes.
  static const std::map<std::string, double> alphas = {
      {"mnasnet0_5", 0.5}, {"mnasnet0_75", 0.75}, {"mnasnet1_0", 1.0}, {"mnasnet1_3", 1.3}};
  auto it = alphas.find(name);
  if (it == alphas.end())
    throw ModelError("unknown mnasnet variant '" + name + "' (mnasnet0_5, mnasnet0_75, mnasnet1_0, mnasnet1_3)");
  return std::make_shared<MNASNet>(it->second, p.num_classes);
}

}  // namespace ptm::arch
