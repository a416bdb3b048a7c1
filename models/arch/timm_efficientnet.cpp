// timm's EfficientNet and MobileNetV3/V4 (timm.models.efficientnet,
// timm.models.mobilenetv3): networks written as timm's block strings
// ("ir_r2_k3_s2_e6_c24_se0.25": type, repeats, kernel, stride, expansion,
// channels, squeeze-excitation), decoded, scaled and built as timm's
// EfficientNetBuilder does, under timm's key names.
#include <cmath>
#include <sstream>

#include "common.h"

#include "../error.h"

namespace ptm::arch {
namespace {

// Python's round(): half to even (the default floating-point rounding mode).
int64_t py_round(double v) { return int64_t(std::nearbyint(v)); }

// One block string, decoded (timm's _decode_block_str).
struct BlockDef {
  std::string type;  // ds, dsa, ir, er, cn, uir
  int repeat = 1;
  int k = 0, a = -1, p = -1;  // kernels: main (dw / exp / conv), start, end (-1: not given)
  int stride = 1;
  double exp = 1.0;
  int64_t out = 0;
  double se = 0;
  Act act = Act::None;  // None: the network's
  bool act_given = false, noskip = false, skip = false;
};

BlockDef decode(const std::string& text) {
  BlockDef b;
  std::stringstream ss(text);
  std::string op;
  std::getline(ss, b.type, '_');
  while (std::getline(ss, op, '_')) {
    if (op == "noskip") {
      b.noskip = true;
    } else if (op == "skip") {
      b.skip = true;
    } else if (op[0] == 'n') {
      const std::string v = op.substr(1);
      b.act_given = true;
      if (v == "re") b.act = Act::ReLU;
      else if (v == "r6") b.act = Act::ReLU6;
      else if (v == "hs") b.act = Act::Hardswish;
      else if (v == "sw") b.act = Act::SiLU;
      else b.act_given = false;
    } else {
      const size_t d = op.find_first_of("0123456789");
      if (d == std::string::npos || d == 0) continue;
      const std::string key = op.substr(0, d), value = op.substr(d);
      if (key == "r") b.repeat = std::stoi(value);
      else if (key == "k") b.k = std::stoi(value);
      else if (key == "a") b.a = std::stoi(value);
      else if (key == "p") b.p = std::stoi(value);
      else if (key == "s") b.stride = std::stoi(value);
      else if (key == "e") b.exp = std::stod(value);
      else if (key == "c") b.out = std::stoll(value);
      else if (key == "se") b.se = std::stod(value);
    }
  }
  if (b.type == "dsa") b.noskip = true;
  return b;
}

// A stage's block strings, one entry a block, its repeats scaled by the
// depth multiplier (timm's _scale_stage_depth, 'ceil' truncation: the
// scaled total is spread over the strings from the last one back).
std::vector<BlockDef> stage_blocks(const std::vector<std::string>& strings, double depth_multiplier) {
  std::vector<BlockDef> defs;
  int total = 0;
  for (const auto& s : strings) {
    defs.push_back(decode(s));
    total += defs.back().repeat;
  }
  int scaled_total = int(std::ceil(total * depth_multiplier));
  std::vector<int> reps(defs.size());
  for (size_t i = defs.size(); i-- > 0;) {
    const int r = defs[i].repeat;
    const int rs = std::max<int64_t>(1, py_round(double(r) / total * scaled_total));
    reps[i] = rs;
    total -= r;
    scaled_total -= rs;
  }
  std::vector<BlockDef> out;
  for (size_t i = 0; i < defs.size(); ++i)
    for (int j = 0; j < reps[i]; ++j) out.push_back(defs[i]);
  return out;
}

int64_t pad_for(int64_t k, int64_t stride) { return ((stride - 1) + (k - 1)) / 2; }

// A conv and a BatchNormAct2d registered on `m` under the given names.
struct ConvBn {
  Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  Act act = Act::None;
  void make(torch::nn::Module& m, const std::string& conv_name, const std::string& bn_name, int64_t in, int64_t out,
            int64_t k, int64_t stride, int64_t groups, Act a) {
    conv = m.register_module(conv_name, arch::conv(in, out, k, stride, pad_for(k, stride), groups));
    bn = m.register_module(bn_name, batchnorm(out));
    act = a;
  }
  explicit operator bool() const { return !conv.is_empty(); }
  at::Tensor operator()(const at::Tensor& x) { return activate(act, bn(conv(x))); }
};

// timm's SqueezeExcite: conv_reduce, act, conv_expand, gate.
class SqueezeExcite : public torch::nn::Module {
 public:
  SqueezeExcite(int64_t c, int64_t rd, Act act, Act gate) : act_(act), gate_(gate) {
    reduce_ = register_module("conv_reduce", conv(c, rd, 1, 1, 0, 1, true));
    expand_ = register_module("conv_expand", conv(rd, c, 1, 1, 0, 1, true));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor s = x.mean({2, 3}, true);
    return x * activate(gate_, expand_(activate(act_, reduce_(s))));
  }

 private:
  Act act_, gate_;
  Conv2d reduce_{nullptr}, expand_{nullptr};
};

// How a network's squeeze-excitation is made (EfficientNet's: block
// activation, sigmoid gate, plain rounding, ratio of the block input;
// MobileNetV3's: ReLU, hard sigmoid, rounded to 8, ratio of the expanded
// width).
struct SeStyle {
  bool from_exp = false;
  bool force_relu = false;
  bool round8 = false;
  Act gate = Act::Sigmoid;
};

class Block : public torch::nn::Module {
 public:
  // `in`: input channels; `def`: the decoded string with out already
  // rounded and stride set for this block's place in the stage.
  Block(int64_t in, const BlockDef& def, Act act, const SeStyle& se_style) {
    const std::string& t = def.type;
    const int64_t out = def.out;
    skip_ = in == out && def.stride == 1 && !def.noskip;
    auto make_se = [&](int64_t chs) {
      if (def.se <= 0) return;
      double ratio = def.se;
      if (!se_style.from_exp) ratio /= (t == "ir" || t == "er" || t == "uir") ? def.exp : 1.0;
      const double v = double(chs) * ratio;
      const int64_t rd = se_style.round8 ? make_divisible(v) : py_round(v);
      se_ = register_module("se", std::make_shared<SqueezeExcite>(chs, rd, se_style.force_relu ? Act::ReLU : act,
                                                                  se_style.gate));
    };
    if (t == "ds" || t == "dsa") {
      dw_.make(*this, "conv_dw", "bn1", in, in, def.k, def.stride, in, act);
      make_se(in);
      pw_.make(*this, "conv_pw", "bn2", in, out, def.p > 0 ? def.p : 1, 1, 1, t == "dsa" ? act : Act::None);
      order_ = {&dw_, nullptr, &pw_};
    } else if (t == "ir") {
      const int64_t mid = make_divisible(double(in) * def.exp);
      exp_.make(*this, "conv_pw", "bn1", in, mid, def.a > 0 ? def.a : 1, 1, 1, act);
      dw_.make(*this, "conv_dw", "bn2", mid, mid, def.k, def.stride, mid, act);
      make_se(mid);
      pw_.make(*this, "conv_pwl", "bn3", mid, out, def.p > 0 ? def.p : 1, 1, 1, Act::None);
      order_ = {&exp_, &dw_, nullptr, &pw_};
    } else if (t == "er") {
      const int64_t mid = make_divisible(double(in) * def.exp);
      exp_.make(*this, "conv_exp", "bn1", in, mid, def.k, def.stride, 1, act);
      make_se(mid);
      pw_.make(*this, "conv_pwl", "bn2", mid, out, def.p > 0 ? def.p : 1, 1, 1, Act::None);
      order_ = {&exp_, nullptr, &pw_};
    } else if (t == "cn") {
      exp_.make(*this, "conv", "bn1", in, out, def.k, def.stride, 1, act);
      skip_ = def.skip && def.stride == 1 && in == out;
      order_ = {&exp_};
    } else if (t == "uir") {
      // Universal inverted residual: optional depthwise convs at the start
      // (a), in the middle (k) and at the end (p); the stride goes to the
      // first of them present.
      const int a = std::max(def.a, 0), k = def.k, p = std::max(def.p, 0);
      const int64_t mid = make_divisible(double(in) * def.exp);
      if (a) uir_.push_back(register_module("dw_start", TimmConvNormAct(in, in, a, k ? 1 : def.stride,
                                                                                        in, Act::None)));
      uir_.push_back(register_module("pw_exp", TimmConvNormAct(in, mid, 1, 1, 1, act)));
      if (k) uir_.push_back(register_module("dw_mid", TimmConvNormAct(mid, mid, k, def.stride, mid, act)));
      make_se(mid);
      se_after_ = uir_.size();
      uir_.push_back(register_module("pw_proj", TimmConvNormAct(mid, out, 1, 1, 1, Act::None)));
      if (p)
        uir_.push_back(register_module(
            "dw_end", TimmConvNormAct(out, out, p, (!a && !k) ? def.stride : 1, out, Act::None)));
    } else {
      throw ModelError("timm block type '" + t + "' is not built by ptm");
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = x;
    if (!uir_.empty()) {
      for (size_t i = 0; i < uir_.size(); ++i) {
        if (i == se_after_ && se_) y = se_->forward(y);
        y = uir_[i]->forward(y);
      }
    } else {
      for (ConvBn* c : order_) y = c ? (*c)(y) : (se_ ? se_->forward(y) : y);
    }
    return skip_ ? y + x : y;
  }

 private:
  ConvBn exp_, dw_, pw_;
  std::vector<ConvBn*> order_;  // nullptr: the squeeze-excitation's place
  std::vector<TimmConvNormAct> uir_;
  size_t se_after_ = 0;
  std::shared_ptr<SqueezeExcite> se_;
  bool skip_ = false;
};

// A network: stem, block strings per stage, head.
struct Design {
  const char* name;
  std::vector<std::vector<std::string>> stages;
  double channel_multiplier = 1.0, depth_multiplier = 1.0;
  int64_t stem = 32;
  bool fix_stem = false;
  int64_t num_features = 1280;
  Act act = Act::SiLU;
  SeStyle se;
  enum Head { EfficientNet, MobileNetV3, MobileNetV4 } head = EfficientNet;
};

class TimmEfficientNet : public ClassifierModuleImpl {
 public:
  TimmEfficientNet(const Design& d, int64_t n) : head_(d.head), act_(d.act) {
    auto round_chs = [&](int64_t c) { return make_divisible(double(c) * d.channel_multiplier); };
    const int64_t stem = d.fix_stem ? d.stem : round_chs(d.stem);
    stem_conv_ = register_module("conv_stem", conv(3, stem, 3, 2, pad_for(3, 2)));
    stem_bn_ = register_module("bn1", batchnorm(stem));
    auto blocks = register_module("blocks", std::make_shared<torch::nn::Module>());
    int64_t in = stem;
    for (size_t s = 0; s < d.stages.size(); ++s) {
      auto stage = blocks->register_module(std::to_string(s), std::make_shared<torch::nn::Module>());
      const auto defs = stage_blocks(d.stages[s], d.depth_multiplier);
      for (size_t i = 0; i < defs.size(); ++i) {
        BlockDef b = defs[i];
        b.out = round_chs(b.out);
        if (i > 0) b.stride = 1;
        blocks_.push_back(stage->register_module(
            std::to_string(i), std::make_shared<Block>(in, b, b.act_given ? b.act : d.act, d.se)));
        in = b.out;
      }
    }
    const int64_t features = d.head == Design::EfficientNet ? round_chs(d.num_features) : d.num_features;
    head_conv_ = register_module("conv_head", conv(in, features, 1, 1, 0, 1, d.head == Design::MobileNetV3));
    if (d.head == Design::EfficientNet) head_bn_ = register_module("bn2", batchnorm(features));
    if (d.head == Design::MobileNetV4) head_bn_ = register_module("norm_head", batchnorm(features));
    classifier_ = register_module("classifier", Linear(features, n));
  }
  at::Tensor embed(const at::Tensor& input) override {
    at::Tensor x = activate(act_, stem_bn_(stem_conv_(input)));
    for (auto& b : blocks_) x = b->forward(x);
    if (head_ == Design::EfficientNet) return torch::adaptive_avg_pool2d(activate(act_, head_bn_(head_conv_(x))), {1, 1}).flatten(1);
    // MobileNetV3/V4: pooled first, then the head's 1x1 conv.
    x = head_conv_(x.mean({2, 3}, true));
    if (head_bn_) x = head_bn_(x);
    return activate(act_, x).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return classifier_(f); }

 private:
  Design::Head head_;
  Act act_;
  Conv2d stem_conv_{nullptr}, head_conv_{nullptr};
  torch::nn::BatchNorm2d stem_bn_{nullptr}, head_bn_{nullptr};
  std::vector<std::shared_ptr<Block>> blocks_;
  Linear classifier_{nullptr};
};

const std::vector<std::vector<std::string>> kEfficientNet = {
    {"ds_r1_k3_s1_e1_c16_se0.25"},  {"ir_r2_k3_s2_e6_c24_se0.25"},  {"ir_r2_k5_s2_e6_c40_se0.25"},
    {"ir_r3_k3_s2_e6_c80_se0.25"},  {"ir_r3_k5_s1_e6_c112_se0.25"}, {"ir_r4_k5_s2_e6_c192_se0.25"},
    {"ir_r1_k3_s1_e6_c320_se0.25"},
};
const std::vector<std::vector<std::string>> kMobileNetV3Large = {
    {"ds_r1_k3_s1_e1_c16_nre"},
    {"ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"},
    {"ir_r3_k5_s2_e3_c40_se0.25_nre"},
    {"ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"},
    {"ir_r2_k3_s1_e6_c112_se0.25"},
    {"ir_r3_k5_s2_e6_c160_se0.25"},
    {"cn_r1_k1_s1_c960"},
};
const std::vector<std::vector<std::string>> kMobileNetV3Small = {
    {"ds_r1_k3_s2_e1_c16_se0.25_nre"},
    {"ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"},
    {"ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"},
    {"ir_r2_k5_s1_e3_c48_se0.25"},
    {"ir_r3_k5_s2_e6_c96_se0.25"},
    {"cn_r1_k1_s1_c576"},
};
const std::vector<std::vector<std::string>> kMobileNetV4ConvSmall = {
    {"cn_r1_k3_s2_e1_c32", "cn_r1_k1_s1_e1_c32"},
    {"cn_r1_k3_s2_e1_c96", "cn_r1_k1_s1_e1_c64"},
    {"uir_r1_a5_k5_s2_e3_c96", "uir_r4_a0_k3_s1_e2_c96", "uir_r1_a3_k0_s1_e4_c96"},
    {"uir_r1_a3_k3_s2_e6_c128", "uir_r1_a5_k5_s1_e4_c128", "uir_r1_a0_k5_s1_e4_c128", "uir_r1_a0_k5_s1_e3_c128",
     "uir_r2_a0_k3_s1_e4_c128"},
    {"cn_r1_k1_s1_c960"},
};
const std::vector<std::vector<std::string>> kMobileNetV4ConvMedium = {
    {"er_r1_k3_s2_e4_c48"},
    {"uir_r1_a3_k5_s2_e4_c80", "uir_r1_a3_k3_s1_e2_c80"},
    {"uir_r1_a3_k5_s2_e6_c160", "uir_r2_a3_k3_s1_e4_c160", "uir_r1_a3_k5_s1_e4_c160", "uir_r1_a3_k3_s1_e4_c160",
     "uir_r1_a3_k0_s1_e4_c160", "uir_r1_a0_k0_s1_e2_c160", "uir_r1_a3_k0_s1_e4_c160"},
    {"uir_r1_a5_k5_s2_e6_c256", "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a3_k5_s1_e4_c256", "uir_r1_a0_k0_s1_e4_c256",
     "uir_r1_a3_k0_s1_e4_c256", "uir_r1_a3_k5_s1_e2_c256", "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a0_k0_s1_e4_c256",
     "uir_r1_a5_k0_s1_e2_c256"},
    {"cn_r1_k1_s1_c960"},
};
const std::vector<std::vector<std::string>> kMobileNetV4ConvLarge = {
    {"er_r1_k3_s2_e4_c48"},
    {"uir_r1_a3_k5_s2_e4_c96", "uir_r1_a3_k3_s1_e4_c96"},
    {"uir_r1_a3_k5_s2_e4_c192", "uir_r3_a3_k3_s1_e4_c192", "uir_r1_a3_k5_s1_e4_c192", "uir_r5_a5_k3_s1_e4_c192",
     "uir_r1_a3_k0_s1_e4_c192"},
    {"uir_r4_a5_k5_s2_e4_c512", "uir_r1_a5_k0_s1_e4_c512", "uir_r1_a5_k3_s1_e4_c512", "uir_r2_a5_k0_s1_e4_c512",
     "uir_r1_a5_k3_s1_e4_c512", "uir_r1_a5_k5_s1_e4_c512", "uir_r3_a5_k0_s1_e4_c512"},
    {"cn_r1_k1_s1_c960"},
};

std::vector<Design> designs() {
  std::vector<Design> v;
  const double b[][2] = {{1.0, 1.0}, {1.0, 1.1}, {1.1, 1.2}, {1.2, 1.4}, {1.4, 1.8}};
  for (int i = 0; i < 5; ++i) {
    Design d;
    d.stages = kEfficientNet;
    d.channel_multiplier = b[i][0];
    d.depth_multiplier = b[i][1];
    v.push_back(d);
  }
  const char* eff[] = {"timm/efficientnet_b0", "timm/efficientnet_b1", "timm/efficientnet_b2",
                       "timm/efficientnet_b3", "timm/efficientnet_b4"};
  for (int i = 0; i < 5; ++i) v[i].name = eff[i];
  // MobileNetV3 and V4: the head's 1x1 conv after pooling, MobileNetV3's
  // squeeze-excitation (V4's conv models have none).
  auto mobilenet = [&](const char* name, const std::vector<std::vector<std::string>>& stages, double mult,
                       int64_t stem, int64_t features, Act act, Design::Head head) {
    Design d;
    d.name = name;
    d.stages = stages;
    d.channel_multiplier = mult;
    d.stem = stem;
    // timm keeps the stem unscaled below 0.75 (V3) and below 1 (V4).
    d.fix_stem = head == Design::MobileNetV3 ? mult < 0.75 : mult < 1.0;
    d.num_features = features;
    d.act = act;
    d.se = SeStyle{true, true, true, Act::Hardsigmoid};
    d.head = head;
    v.push_back(d);
  };
  const auto v3 = Design::MobileNetV3, v4 = Design::MobileNetV4;
  mobilenet("mobilenetv3_large_100", kMobileNetV3Large, 1.0, 16, 1280, Act::Hardswish, v3);
  mobilenet("mobilenetv3_small_050", kMobileNetV3Small, 0.5, 16, 1024, Act::Hardswish, v3);
  mobilenet("mobilenetv3_small_075", kMobileNetV3Small, 0.75, 16, 1024, Act::Hardswish, v3);
  mobilenet("mobilenetv3_small_100", kMobileNetV3Small, 1.0, 16, 1024, Act::Hardswish, v3);
  mobilenet("mobilenetv4_conv_small", kMobileNetV4ConvSmall, 1.0, 32, 1280, Act::ReLU, v4);
  mobilenet("mobilenetv4_conv_medium", kMobileNetV4ConvMedium, 1.0, 32, 1280, Act::ReLU, v4);
  mobilenet("mobilenetv4_conv_large", kMobileNetV4ConvLarge, 1.0, 24, 1280, Act::ReLU, v4);
  return v;
}

}  // namespace

ClassifierModulePtr make_timm_efficientnet(const std::string& name, const ArchParams& p) {
  static const std::vector<Design> all = designs();
  for (const Design& d : all)
    if (name == d.name) return std::make_shared<TimmEfficientNet>(d, p.num_classes);
  throw ModelError("unknown timm EfficientNet/MobileNet variant '" + name + "'");
}

}  // namespace ptm::arch
