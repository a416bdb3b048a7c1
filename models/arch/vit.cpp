// torchvision.models.vision_transformer: ViT-B/L/H with a class token, a
// learnt position table and pre-norm encoder blocks; and timm's
// VisionTransformer (ViT-Ti/S/B/L, DeiT), the same network under timm's names.
#include <cmath>

#include "transformer.h"

#include "../error.h"

namespace ptm::arch {
namespace {

// Multi-head self-attention over N x L x D tokens from a packed q/k/v
// projection (q, k, v blocks of D rows each) and an output projection.
// Reshapes keep the batch as -1 so a traced graph serves every batch size.
at::Tensor self_attention(const at::Tensor& x, const at::Tensor& qkv_w, const at::Tensor& qkv_b,
                          const Linear& proj, int64_t heads) {
  const int64_t len = x.size(1), dim = x.size(2), hd = dim / heads;
  at::Tensor qkv = linear(x, qkv_w, qkv_b).reshape({-1, len, 3, heads, hd}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0] / std::sqrt(double(hd));
  at::Tensor attn = torch::softmax(arch::matmul(q, qkv[1].transpose(-2, -1)), -1);
  return linear(proj, arch::matmul(attn, qkv[2]).transpose(1, 2).reshape({-1, len, dim}));
}

std::string size_str(const std::vector<int64_t>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

// nn.MultiheadAttention's parameters (packed q/k/v projection, out_proj)
// used as batch-first self-attention.
class SelfAttention : public torch::nn::Module {
 public:
  SelfAttention(int64_t dim, int64_t heads) : heads_(heads) {
    in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * dim, dim}));
    in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * dim}));
    out_proj = register_module("out_proj", Linear(dim, dim));
    if (random_init()) torch::nn::init::xavier_uniform_(in_proj_weight);
    torch::nn::init::zeros_(out_proj->bias);
  }
  at::Tensor forward(const at::Tensor& x) { return self_attention(x, in_proj_weight, in_proj_bias, out_proj, heads_); }
  at::Tensor in_proj_weight, in_proj_bias;
  Linear out_proj{nullptr};

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
      if (!random_init()) break;
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
    head = register_module("head", Linear(dim, num_classes));
    torch::nn::init::zeros_(head->weight);
    torch::nn::init::zeros_(head->bias);
  }
  Linear head{nullptr};
};

struct VitConfig {
  const char* name;
  int64_t patch, layers, heads, dim, mlp_dim;
  bool distilled = false;  // DeiT's distillation token and head (timm)
};

class VisionTransformerImpl : public ClassifierModuleImpl {
 public:
  VisionTransformerImpl(const VitConfig& c, int64_t image_size, int64_t num_classes)
      : name_(c.name), image_size_(image_size) {
    conv_proj = register_module(
        "conv_proj", Conv2d(torch::nn::Conv2dOptions(3, c.dim, c.patch).stride(c.patch)));
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
                       " images (its position table's size), got " + size_str(input.sizes().vec()));
    at::Tensor x = conv_proj(input).flatten(2).transpose(1, 2);  // N x patches x D
    // expand_as (not a size read) keeps the traced graph batch-agnostic.
    x = torch::cat({class_token.expand_as(x.narrow(1, 0, 1)), x}, 1);
    return encoder->forward(x).select(1, 0);
  }
  at::Tensor logits(const at::Tensor& f) override { return heads->head(f); }
  int64_t fixed_input_size() const override { return image_size_; }

  Conv2d conv_proj{nullptr};
  at::Tensor class_token;
  std::shared_ptr<Encoder> encoder;
  std::shared_ptr<Heads> heads;

 private:
  std::string name_;
  int64_t image_size_;
};

// timm's Attention: qkv (biased) and proj.
class TimmAttention : public torch::nn::Module {
 public:
  TimmAttention(int64_t dim, int64_t heads) : heads_(heads) {
    qkv = register_module("qkv", Linear(dim, 3 * dim));
    proj = register_module("proj", Linear(dim, dim));
  }
  at::Tensor forward(const at::Tensor& x) { return self_attention(x, qkv->weight, qkv->bias, proj, heads_); }
  Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t heads_;
};

// timm's Block without layer scale: norm1, attn, norm2, mlp (fc1, fc2).
class TimmBlock : public torch::nn::Module {
 public:
  TimmBlock(int64_t dim, int64_t heads, int64_t mlp_dim) {
    norm1 = register_module("norm1", layer_norm(dim, 1e-6));
    attn = register_module("attn", std::make_shared<TimmAttention>(dim, heads));
    norm2 = register_module("norm2", layer_norm(dim, 1e-6));
    mlp = register_module("mlp", Mlp(dim, mlp_dim, "fc1", "fc2"));
    at::NoGradGuard ng;
    for (auto* l : {&attn->qkv, &attn->proj}) trunc_normal_((*l)->weight, 0.02), torch::nn::init::zeros_((*l)->bias);
    for (auto& l : mlp->linears()) trunc_normal_(l->weight, 0.02), torch::nn::init::zeros_(l->bias);
  }
  at::Tensor forward(const at::Tensor& input) {
    at::Tensor x = input + attn->forward(norm1(input));
    return x + mlp(norm2(x));
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<TimmAttention> attn;
  Mlp mlp{nullptr};
};

// timm's PatchEmbed: one strided convolution, "proj".
class PatchEmbed : public torch::nn::Module {
 public:
  PatchEmbed(int64_t dim, int64_t patch) {
    proj = register_module("proj", Conv2d(torch::nn::Conv2dOptions(3, dim, patch).stride(patch)));
  }
  at::Tensor forward(const at::Tensor& x) { return proj(x).flatten(2).transpose(1, 2); }
  Conv2d proj{nullptr};
};

// timm.models.vision_transformer.VisionTransformer as its vit_*_patch*_224
// and deit_*_patch16_224 models build it: class token, a position table
// over it and the patches, token pooling after the final norm. DeiT's
// distilled models (timm.models.deit.VisionTransformerDistilled) add a
// distillation token after the class token (the table covers both) and a
// second head on it; their logits are the two heads' mean.
class TimmVisionTransformerImpl : public ClassifierModuleImpl {
 public:
  TimmVisionTransformerImpl(const VitConfig& c, int64_t image_size, int64_t num_classes)
      : name_(c.name), image_size_(image_size), distilled_(c.distilled) {
    const int64_t grid = image_size / c.patch, prefix = c.distilled ? 2 : 1;
    patch_embed = register_module("patch_embed", std::make_shared<PatchEmbed>(c.dim, c.patch));
    cls_token = register_parameter("cls_token", torch::empty({1, 1, c.dim}).normal_(0.0, 1e-6));
    pos_embed = register_parameter("pos_embed", torch::empty({1, grid * grid + prefix, c.dim}));
    trunc_normal_(pos_embed, 0.02);
    if (distilled_) {
      dist_token = register_parameter("dist_token", torch::empty({1, 1, c.dim}));
      trunc_normal_(dist_token, 0.02);
    }
    blocks = register_module("blocks", std::make_shared<Blocks>());
    for (int64_t i = 0; i < c.layers; ++i) blocks->add(std::make_shared<TimmBlock>(c.dim, c.heads, c.mlp_dim));
    norm = register_module("norm", layer_norm(c.dim, 1e-6));
    head = register_module("head", Linear(c.dim, num_classes));
    if (distilled_) head_dist = register_module("head_dist", Linear(c.dim, num_classes));
    at::NoGradGuard ng;
    for (auto* h : {&head, &head_dist}) {
      if (!*h) continue;
      trunc_normal_((*h)->weight, 0.02);
      torch::nn::init::zeros_((*h)->bias);
    }
  }

  // N x D (the class token), or N x 2 x D (class and distillation tokens).
  at::Tensor embed(const at::Tensor& input) override {
    if (input.dim() != 4 || input.size(2) != image_size_ || input.size(3) != image_size_)
      throw ModelError(name_ + " takes " + std::to_string(image_size_) + "x" + std::to_string(image_size_) +
                       " images (its position table's size), got " + size_str(input.sizes().vec()));
    at::Tensor x = patch_embed->forward(input);
    const at::Tensor one = x.narrow(1, 0, 1);
    x = distilled_ ? torch::cat({cls_token.expand_as(one), dist_token.expand_as(one), x}, 1)
                   : torch::cat({cls_token.expand_as(one), x}, 1);
    x = norm(blocks->forward(x + pos_embed));
    return distilled_ ? x.narrow(1, 0, 2) : x.select(1, 0);
  }
  at::Tensor logits(const at::Tensor& f) override {
    if (!distilled_) return linear(head, f);
    return (linear(head, f.select(1, 0)) + linear(head_dist, f.select(1, 1))) / 2;
  }
  // timm's pre-logits: the two tokens' mean. A head trained on it, written
  // to both heads, gives the same logits.
  at::Tensor pre_logits(const at::Tensor& f) override { return distilled_ ? f.mean(1) : f; }
  int64_t fixed_input_size() const override { return image_size_; }

  std::shared_ptr<PatchEmbed> patch_embed;
  at::Tensor cls_token, pos_embed, dist_token;
  std::shared_ptr<Blocks> blocks;
  torch::nn::LayerNorm norm{nullptr};
  Linear head{nullptr}, head_dist{nullptr};

 private:
  std::string name_;
  int64_t image_size_;
  bool distilled_;
};

const VitConfig kConfigs[] = {
    {"vit_b_16", 16, 12, 12, 768, 3072},  {"vit_b_32", 32, 12, 12, 768, 3072},
    {"vit_l_16", 16, 24, 16, 1024, 4096}, {"vit_l_32", 32, 24, 16, 1024, 4096},
    {"vit_h_14", 14, 32, 16, 1280, 5120},
};

const VitConfig kTimmConfigs[] = {
    {"vit_tiny_patch16_224", 16, 12, 3, 192, 768},      {"vit_small_patch16_224", 16, 12, 6, 384, 1536},
    {"vit_small_patch32_224", 32, 12, 6, 384, 1536},    {"vit_base_patch16_224", 16, 12, 12, 768, 3072},
    {"vit_base_patch32_224", 32, 12, 12, 768, 3072},    {"vit_large_patch16_224", 16, 24, 16, 1024, 4096},
    {"deit_tiny_patch16_224", 16, 12, 3, 192, 768},     {"deit_small_patch16_224", 16, 12, 6, 384, 1536},
    {"deit_base_patch16_224", 16, 12, 12, 768, 3072},
    {"deit_tiny_distilled_patch16_224", 16, 12, 3, 192, 768, true},
    {"deit_small_distilled_patch16_224", 16, 12, 6, 384, 1536, true},
    {"deit_base_distilled_patch16_224", 16, 12, 12, 768, 3072, true},
};

int64_t checked_size(const std::string& name, const VitConfig& c, const ArchParams& p) {
  const int64_t size = p.image_size > 0 ? p.image_size : find_architecture(name)->crop_size;
  if (size < c.patch || size % c.patch != 0)
    throw ModelError(name + " cuts its input into " + std::to_string(c.patch) + "-pixel patches: an image size of " +
                     std::to_string(size) + " is not a multiple of that");
  return size;
}

}  // namespace

ClassifierModulePtr make_vit(const std::string& name, const ArchParams& p) {
  for (const auto& c : kConfigs)
    if (name == c.name) return std::make_shared<VisionTransformerImpl>(c, checked_size(name, c, p), p.num_classes);
  throw ModelError("unknown vision transformer variant '" + name + "'");
}

ClassifierModulePtr make_timm_vit(const std::string& name, const ArchParams& p) {
  for (const auto& c : kTimmConfigs)
    if (name == c.name)
      return std::make_shared<TimmVisionTransformerImpl>(c, checked_size(name, c, p), p.num_classes);
  throw ModelError("unknown timm vision transformer variant '" + name + "'");
}

}  // namespace ptm::arch
