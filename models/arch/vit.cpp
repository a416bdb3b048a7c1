// torchvision.models.vision_transformer: ViT-B/L/H with a class token, a
// learnt position table and pre-norm encoder blocks.
#include <cmath>

#include "transformer.h"

#include "../error.h"

namespace ptm::arch {
namespace {

// nn.MultiheadAttention's parameters (packed q/k/v projection, out_proj)
// used as batch-first self-attention. Reshapes keep the batch as -1 so a
// traced graph serves every batch size.
class SelfAttention : public torch::nn::Module {
 public:
  SelfAttention(int64_t dim, int64_t heads) : heads_(heads) {
    in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * dim, dim}));
    in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * dim}));
    out_proj = register_module("out_proj", torch::nn::Linear(dim, dim));
    torch::nn::init::xavier_uniform_(in_proj_weight);
    torch::nn::init::zeros_(out_proj->bias);
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t len = x.size(1), dim = x.size(2), hd = dim / heads_;
    at::Tensor qkv = linear(x, in_proj_weight, in_proj_bias)
                         .reshape({-1, len, 3, heads_, hd})
                         .permute({2, 0, 3, 1, 4});
    at::Tensor q = qkv[0] / std::sqrt(double(hd));
    at::Tensor attn = torch::softmax(torch::matmul(q, qkv[1].transpose(-2, -1)), -1);
    return linear(out_proj, torch::matmul(attn, qkv[2]).transpose(1, 2).reshape({-1, len, dim}));
  }
  at::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};

 private:
  int64_t heads_;
};

class EncoderBlock : public torch::nn::Module {
 public:
  EncoderBlock(int64_t dim, int64_t heads, int64_t mlp_dim) {
    ln_1 = register_module("ln_1", layer_norm(dim, 1e-6));
    self_attention = register_module("self_attention", std::make_shared<SelfAttention>(dim, heads));
    ln_2 = register_module("ln_2", layer_norm(dim, 1e-6));
    mlp = register_module("mlp", Mlp(dim, mlp_dim));
    at::NoGradGuard ng;
    for (auto& l : mlp->linears()) {
      torch::nn::init::xavier_uniform_(l->weight);
      l->bias.normal_(0.0, 1e-6);
    }
  }
  at::Tensor forward(const at::Tensor& input) {
    at::Tensor x = self_attention->forward(ln_1(input)) + input;
    return x + mlp(ln_2(x));
  }
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  std::shared_ptr<SelfAttention> self_attention;
  Mlp mlp{nullptr};
};

// nn.Sequential of named blocks: encoder_layer_0, encoder_layer_1, ...
class EncoderLayers : public torch::nn::Module {
 public:
  void add(std::shared_ptr<EncoderBlock> b) {
    blocks_.push_back(register_module("encoder_layer_" + std::to_string(blocks_.size()), std::move(b)));
  }
  at::Tensor forward(at::Tensor x) {
    for (auto& b : blocks_) x = b->forward(x);
    return x;
  }

 private:
  std::vector<std::shared_ptr<EncoderBlock>> blocks_;
};

class Encoder : public torch::nn::Module {
 public:
  Encoder(int64_t seq_length, int64_t num_layers, int64_t heads, int64_t dim, int64_t mlp_dim) {
    pos_embedding = register_parameter("pos_embedding", torch::empty({1, seq_length, dim}).normal_(0.0, 0.02));
    layers = register_module("layers", std::make_shared<EncoderLayers>());
    for (int64_t i = 0; i < num_layers; ++i) layers->add(std::make_shared<EncoderBlock>(dim, heads, mlp_dim));
    ln = register_module("ln", layer_norm(dim, 1e-6));
  }
  at::Tensor forward(const at::Tensor& x) { return ln(layers->forward(x + pos_embedding)); }
  at::Tensor pos_embedding;
  std::shared_ptr<EncoderLayers> layers;
  torch::nn::LayerNorm ln{nullptr};
};

// nn.Sequential(OrderedDict(head=Linear)): these builders have no pre_logits.
class Heads : public torch::nn::Module {
 public:
  Heads(int64_t dim, int64_t num_classes) {
    head = register_module("head", torch::nn::Linear(dim, num_classes));
    torch::nn::init::zeros_(head->weight);
    torch::nn::init::zeros_(head->bias);
  }
  torch::nn::Linear head{nullptr};
};

struct VitConfig {
  const char* name;
  int64_t patch, layers, heads, dim, mlp_dim;
};

class VisionTransformerImpl : public ClassifierModuleImpl {
 public:
  VisionTransformerImpl(const VitConfig& c, int64_t image_size, int64_t num_classes)
      : name_(c.name), image_size_(image_size) {
    conv_proj = register_module(
        "conv_proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, c.dim, c.patch).stride(c.patch)));
    trunc_normal_(conv_proj->weight, std::sqrt(1.0 / double(3 * c.patch * c.patch)));
    torch::nn::init::zeros_(conv_proj->bias);
    class_token = register_parameter("class_token", torch::zeros({1, 1, c.dim}));
    const int64_t grid = image_size / c.patch;
    encoder = register_module("encoder", std::make_shared<Encoder>(grid * grid + 1, c.layers, c.heads, c.dim, c.mlp_dim));
    heads = register_module("heads", std::make_shared<Heads>(c.dim, num_classes));
  }

  at::Tensor embed(const at::Tensor& input) override {
    if (input.dim() != 4 || input.size(2) != image_size_ || input.size(3) != image_size_)
      throw ModelError(name_ + " takes " + std::to_string(image_size_) + "x" + std::to_string(image_size_) +
                       " images (its position table's size), got " + shape_str(input.sizes().vec()));
    at::Tensor x = conv_proj(input).flatten(2).transpose(1, 2);  // N x patches x D
    // expand_as (not a size read) keeps the traced graph batch-agnostic.
    x = torch::cat({class_token.expand_as(x.narrow(1, 0, 1)), x}, 1);
    return encoder->forward(x).select(1, 0);
  }
  at::Tensor logits(const at::Tensor& f) override { return heads->head(f); }
  int64_t fixed_input_size() const override { return image_size_; }

  torch::nn::Conv2d conv_proj{nullptr};
  at::Tensor class_token;
  std::shared_ptr<Encoder> encoder;
  std::shared_ptr<Heads> heads;

 private:
  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string r;
    for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
    return r;
  }
  std::string name_;
  int64_t image_size_;
};

const VitConfig kConfigs[] = {
    {"vit_b_16", 16, 12, 12, 768, 3072},  {"vit_b_32", 32, 12, 12, 768, 3072},
    {"vit_l_16", 16, 24, 16, 1024, 4096}, {"vit_l_32", 32, 24, 16, 1024, 4096},
    {"vit_h_14", 14, 32, 16, 1280, 5120},
};

}  // namespace

ClassifierModulePtr make_vit(const std::string& name, const ArchParams& p) {
  for (const auto& c : kConfigs) {
    if (name != c.name) continue;
    const int64_t size = p.image_size > 0 ? p.image_size : find_architecture(name)->crop_size;
    if (size < c.patch || size % c.patch != 0)
      throw ModelError(name + " cuts its input into " + std::to_string(c.patch) + "-pixel patches: an image size of " +
                       std::to_string(size) + " is not a multiple of that");
    return std::make_shared<VisionTransformerImpl>(c, size, p.num_classes);
  }
  throw ModelError("unknown vision transformer variant '" + name + "'");
}

}  // namespace ptm::arch
