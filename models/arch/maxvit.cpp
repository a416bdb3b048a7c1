// torchvision.models.maxvit: MaxViT (maxvit_t). Each layer is an MBConv
// block, then attention within 7x7 windows, then attention across a 7x7
// grid spanning the whole map ("multi-axis" attention), each with a learnt
// relative position bias.
//
// torchvision builds the partitioning for one input size; here it follows
// the size of the input, so any size whose four stage maps divide into 7x7
// windows runs (224, 448, ...) with torchvision's result at that size, and
// others are refused with the sizes named. Reshapes keep the batch as -1 so
// a traced graph serves every batch size.
#include "transformer.h"

#include "../error.h"

namespace ptm::arch {
namespace {

constexpr int64_t kPartition = 7;
constexpr Norm kNorm{1e-3, 0.01};

// Output side of a 3x3, stride 2, padding 1 convolution.
int64_t halved(int64_t n) { return (n - 1) / 2 + 1; }

// MBConv: pre-norm inverted residual with squeeze-excitation; the shortcut
// is average-pooled and projected when the block changes size or width.
class MBConv : public torch::nn::Module {
 public:
  MBConv(int64_t in, int64_t out, int64_t stride) {
    const int64_t mid = out * 4, squeeze = out / 4;
    if (stride != 1 || in != out) {
      proj_ = register_module("proj", std::make_shared<Blocks>());
      if (stride == 2) proj_->add(torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(3).stride(2).padding(1)).ptr());
      proj_->add(conv(in, out, 1, 1, 0, 1, true).ptr());
    }
    auto l = register_module("layers", std::make_shared<torch::nn::Module>());
    pre_norm_ = l->register_module("pre_norm", batchnorm(in, kNorm));
    conv_a_ = l->register_module("conv_a", ConvNormAct(in, mid, 1, 1, 1, Act::GELU, kNorm));
    conv_b_ = l->register_module("conv_b", ConvNormAct(mid, mid, 3, stride, mid, Act::GELU, kNorm));
    se_ = l->register_module("squeeze_excitation", SqueezeExcitation(mid, squeeze, Act::SiLU, Act::Sigmoid));
    conv_c_ = l->register_module("conv_c", conv(mid, out, 1, 1, 0, 1, true));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = conv_c_(se_(conv_b_(conv_a_(pre_norm_(x)))));
    return (proj_ ? proj_->forward(x) : x) + y;
  }

 private:
  std::shared_ptr<Blocks> proj_;
  torch::nn::BatchNorm2d pre_norm_{nullptr};
  ConvNormAct conv_a_{nullptr}, conv_b_{nullptr};
  SqueezeExcitation se_{nullptr};
  Conv2d conv_c_{nullptr};
};

// RelativePositionalMultiHeadAttention over B x G x P x D token groups. Its
// scale is the model width's (feat_dim^-0.5), not the head's, as torchvision has it.
class RelativeAttention : public torch::nn::Module {
 public:
  RelativeAttention(int64_t dim, int64_t head_dim) : heads_(dim / head_dim), scale_(std::pow(double(dim), -0.5)) {
    to_qkv = register_module("to_qkv", Linear(dim, 3 * dim));
    merge = register_module("merge", Linear(dim, dim));
    const int64_t span = 2 * kPartition - 1;
    relative_position_bias_table = register_parameter("relative_position_bias_table", torch::zeros({span * span, heads_}));
    trunc_normal_(relative_position_bias_table, 0.02);
    at::Tensor c = torch::arange(kPartition);
    at::Tensor ys = c.repeat_interleave(kPartition), xs = c.repeat(kPartition);
    at::Tensor dy = ys.unsqueeze(1) - ys.unsqueeze(0) + (kPartition - 1);
    at::Tensor dx = xs.unsqueeze(1) - xs.unsqueeze(0) + (kPartition - 1);
    relative_position_index = register_buffer("relative_position_index", dy * span + dx);
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t groups = x.size(1), len = x.size(2), dim = x.size(3), hd = dim / heads_;
    at::Tensor t = linear(to_qkv, x).view({-1, groups, len, 3, heads_, hd}).permute({3, 0, 1, 4, 2, 5});
    at::Tensor q = t[0], k = t[1] * scale_, v = t[2];
    const int64_t table_len = kPartition * kPartition;
    at::Tensor bias = relative_position_bias_table.index_select(0, relative_position_index.view(-1))
                          .view({table_len, table_len, heads_})
                          .permute({2, 0, 1});
    at::Tensor attn = torch::softmax(arch::matmul(q, k.transpose(-2, -1)) + bias, -1);
    at::Tensor out = arch::matmul(attn, v).permute({0, 1, 3, 2, 4}).reshape({-1, groups, len, dim});
    return linear(merge, out);
  }
  Linear to_qkv{nullptr}, merge{nullptr};
  at::Tensor relative_position_bias_table, relative_position_index;

 private:
  int64_t heads_;
  double scale_;
};

// PartitionAttentionLayer: attention and MLP (both pre-norm, residual) over
// 7x7 windows ("window") or over a 7x7 grid of strided positions ("grid").
class PartitionAttention : public torch::nn::Module {
 public:
  PartitionAttention(int64_t dim, int64_t head_dim, bool grid) : grid_(grid) {
    auto attn = register_module("attn_layer", std::make_shared<torch::nn::Module>());
    attn_norm_ = attn->register_module("0", layer_norm(dim, 1e-5));
    attention_ = attn->register_module("1", std::make_shared<RelativeAttention>(dim, head_dim));
    auto mlp = register_module("mlp_layer", std::make_shared<torch::nn::Module>());
    mlp_norm_ = mlp->register_module("0", layer_norm(dim, 1e-5));
    fc1_ = mlp->register_module("1", Linear(dim, 4 * dim));
    fc2_ = mlp->register_module("3", Linear(4 * dim, dim));
  }
  at::Tensor forward(const at::Tensor& input) {
    const int64_t c = input.size(1), h = input.size(2), w = input.size(3);
    // torchvision: windows of 7x7 pixels, or p x p windows of (h/7)^2 pixels
    // each where grid attention then runs across the windows.
    const int64_t p = grid_ ? h / kPartition : kPartition;
    if (p == 0 || h % p != 0 || w % p != 0)
      throw ModelError("maxvit: a " + std::to_string(h) + "x" + std::to_string(w) + " feature map does not divide into " +
                       std::to_string(p) + "x" + std::to_string(p) + " partitions");
    const int64_t gh = h / p, gw = w / p;
    at::Tensor x = input.reshape({-1, c, gh, p, gw, p}).permute({0, 2, 4, 3, 5, 1}).reshape({-1, gh * gw, p * p, c});
    if (grid_) x = x.transpose(1, 2);
    x = x + attention_->forward(attn_norm_(x));
    x = x + linear(fc2_, linear_gelu(mlp_norm_(x), fc1_->weight, fc1_->bias));
    if (grid_) x = x.transpose(1, 2);
    return x.reshape({-1, gh, gw, p, p, c}).permute({0, 5, 1, 3, 2, 4}).reshape({-1, c, h, w});
  }

 private:
  bool grid_;
  torch::nn::LayerNorm attn_norm_{nullptr}, mlp_norm_{nullptr};
  std::shared_ptr<RelativeAttention> attention_;
  Linear fc1_{nullptr}, fc2_{nullptr};
};

class MaxVitLayer : public torch::nn::Module {
 public:
  MaxVitLayer(int64_t in, int64_t out, int64_t stride, int64_t head_dim) {
    auto l = register_module("layers", std::make_shared<torch::nn::Module>());
    mbconv_ = l->register_module("MBconv", std::make_shared<MBConv>(in, out, stride));
    window_ = l->register_module("window_attention", std::make_shared<PartitionAttention>(out, head_dim, false));
    grid_ = l->register_module("grid_attention", std::make_shared<PartitionAttention>(out, head_dim, true));
  }
  at::Tensor forward(const at::Tensor& x) { return grid_->forward(window_->forward(mbconv_->forward(x))); }

 private:
  std::shared_ptr<MBConv> mbconv_;
  std::shared_ptr<PartitionAttention> window_, grid_;
};

class MaxVit : public ClassifierModuleImpl {
 public:
  MaxVit(int64_t stem, const std::vector<int64_t>& widths, const std::vector<int64_t>& depths, int64_t head_dim,
         int64_t n) {
    auto s = register_module("stem", std::make_shared<Blocks>());
    s->add(ConvNormAct(3, stem, 3, 2, 1, Act::GELU, kNorm).ptr());
    auto s1 = std::make_shared<Blocks>();  // Conv2dNormActivation without norm or activation: "0" only
    s1->add(conv(stem, stem, 3, 1, 1, 1, true).ptr());
    s->add(s1);
    stem_ = s;
    auto blocks = register_module("blocks", std::make_shared<torch::nn::Module>());
    int64_t in = stem;
    for (size_t b = 0; b < widths.size(); ++b) {
      auto block = std::make_shared<torch::nn::Module>();
      auto layers = block->register_module("layers", std::make_shared<Blocks>());
      for (int64_t i = 0; i < depths[b]; ++i)
        layers->add(std::make_shared<MaxVitLayer>(i == 0 ? in : widths[b], widths[b], i == 0 ? 2 : 1, head_dim));
      blocks->register_module(std::to_string(b), block);
      stages_.push_back(layers);
      in = widths[b];
    }
    auto c = register_module("classifier", std::make_shared<torch::nn::Module>());
    norm_ = c->register_module("2", layer_norm(in, 1e-5));
    pre_logits_ = c->register_module("3", Linear(in, in));
    fc_ = c->register_module("5", Linear(torch::nn::LinearOptions(in, n).bias(false)));
  }
  at::Tensor embed(const at::Tensor& input) override {
    // Every stage's map must divide into 7x7 windows (torchvision checks
    // this when it builds the model for an input size).
    int64_t h = halved(input.size(2)), w = halved(input.size(3));
    for (size_t b = 0; b < stages_.size(); ++b) {
      h = halved(h);
      w = halved(w);
      // Windows of 7x7 pixels, and a grid of (h/7)x(h/7) windows: torchvision
      // takes the grid's side from the height.
      if (h % kPartition != 0 || w % kPartition != 0 || w % (h / kPartition) != 0)
        throw ModelError("maxvit_t cannot take " + std::to_string(input.size(2)) + "x" + std::to_string(input.size(3)) +
                         " input: stage " + std::to_string(b) + "'s " + std::to_string(h) + "x" + std::to_string(w) +
                         " map does not divide into 7x7 windows and a grid of them (224x224 and its multiples do)");
    }
    at::Tensor x = stem_->forward(input);
    for (auto& s : stages_) x = s->forward(x);
    return torch::tanh(linear(pre_logits_, norm_(x.mean({2, 3}))));
  }
  at::Tensor logits(const at::Tensor& f) override { return linear(fc_, f); }

 private:
  std::shared_ptr<Blocks> stem_;
  std::vector<std::shared_ptr<Blocks>> stages_;
  torch::nn::LayerNorm norm_{nullptr};
  Linear pre_logits_{nullptr}, fc_{nullptr};
};

}  // namespace

ClassifierModulePtr make_maxvit(const std::string& name, const ArchParams& p) {
  if (name != "maxvit_t") throw ModelError("unknown maxvit variant '" + name + "' (maxvit_t)");
  return std::make_shared<MaxVit>(64, std::vector<int64_t>{64, 128, 256, 512}, std::vector<int64_t>{2, 2, 5, 2}, 32,
                                  p.num_classes);
}

}  // namespace ptm::arch
