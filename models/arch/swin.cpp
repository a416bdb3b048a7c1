// torchvision.models.swin_transformer: Swin (v1: pre-norm blocks, learnt
// relative position bias) and Swin V2 (post-norm blocks, cosine attention,
// position bias from a small MLP over log-spaced coordinates).
//
// Activations are N x H x W x C. Inputs of any size are padded to window
// multiples at run time, as torchvision does; reshapes keep the batch as -1
// so a traced graph serves every batch size.
#include <cmath>
#include <limits>

#include "transformer.h"

#include "../error.h"

namespace ptm::arch {
namespace {

// features.0: Conv2d "0", Permute "1" (no parameters), LayerNorm "2".
class PatchEmbed : public torch::nn::Module {
 public:
  PatchEmbed(int64_t dim, int64_t patch) {
    proj_ = register_module("0", Conv2d(torch::nn::Conv2dOptions(3, dim, patch).stride(patch)));
    norm_ = register_module("2", layer_norm(dim, 1e-5));
  }
  at::Tensor forward(const at::Tensor& x) { return norm_(proj_(x).permute({0, 2, 3, 1})); }

 private:
  Conv2d proj_{nullptr};
  torch::nn::LayerNorm norm_{nullptr};
};

// Halves H and W (odd sizes padded), concatenating each 2x2 neighbourhood
// in torchvision's order: (0,0), (1,0), (0,1), (1,1).
at::Tensor merge_neighbours(const at::Tensor& input) {
  at::Tensor x = torch::constant_pad_nd(input, {0, 0, 0, input.size(2) % 2, 0, input.size(1) % 2});
  const int64_t end = std::numeric_limits<int64_t>::max();
  auto pick = [&](int64_t h, int64_t w) { return x.slice(1, h, end, 2).slice(2, w, end, 2); };
  return torch::cat({pick(0, 0), pick(1, 0), pick(0, 1), pick(1, 1)}, -1);
}

// PatchMerging (v1: norm, then reduce) and PatchMergingV2 (reduce, then norm).
class PatchMerging : public torch::nn::Module {
 public:
  PatchMerging(int64_t dim, bool v2) : v2_(v2) {
    reduction = register_module("reduction", Linear(torch::nn::LinearOptions(4 * dim, 2 * dim).bias(false)));
    norm = register_module("norm", layer_norm(v2 ? 2 * dim : 4 * dim, 1e-5));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor m = merge_neighbours(x);
    return v2_ ? norm(linear(reduction, m)) : linear(reduction, norm(m));
  }
  Linear reduction{nullptr};
  torch::nn::LayerNorm norm{nullptr};

 private:
  bool v2_;
};

// The -100 / 0 mask that keeps shifted windows from attending across the
// seams the cyclic shift creates: nW x L x L for a pad_h x pad_w map. Built
// as torchvision does, labelling nine regions by Python slices (a zero
// shift makes some of them empty or whole).
at::Tensor shift_mask(int64_t pad_h, int64_t pad_w, int64_t win, int64_t shift_h, int64_t shift_w) {
  const int64_t none = std::numeric_limits<int64_t>::max();
  auto bound = [](int64_t i, int64_t n) { return i < 0 ? std::max<int64_t>(n + i, 0) : std::min(i, n); };
  const int64_t hs[3][2] = {{0, -win}, {-win, -shift_h}, {-shift_h, none}};
  const int64_t ws[3][2] = {{0, -win}, {-win, -shift_w}, {-shift_w, none}};
  std::vector<int64_t> label(size_t(pad_h * pad_w), 0);
  int64_t count = 0;
  for (const auto& h : hs)
    for (const auto& w : ws) {
      for (int64_t r = bound(h[0], pad_h); r < bound(h[1], pad_h); ++r)
        for (int64_t c = bound(w[0], pad_w); c < bound(w[1], pad_w); ++c) label[size_t(r * pad_w + c)] = count;
      ++count;
    }
  const int64_t nh = pad_h / win, nw = pad_w / win, len = win * win;
  // The tensor owns its values: a traced graph keeps it as a constant.
  auto* mask = new std::vector<float>(size_t(nh * nw * len * len));
  float* m = mask->data();
  for (int64_t wy = 0; wy < nh; ++wy)
    for (int64_t wx = 0; wx < nw; ++wx) {
      auto at = [&](int64_t t) { return label[size_t((wy * win + t / win) * pad_w + wx * win + t % win)]; };
      for (int64_t i = 0; i < len; ++i)
        for (int64_t j = 0; j < len; ++j) *m++ = at(i) == at(j) ? 0.0f : -100.0f;
    }
  return torch::from_blob(mask->data(), {nh * nw, len, len}, [mask](void*) { delete mask; }, at::kFloat);
}

// ShiftedWindowAttention (v1) and ShiftedWindowAttentionV2.
class WindowAttention : public torch::nn::Module {
 public:
  WindowAttention(int64_t dim, int64_t win, int64_t shift, int64_t heads, bool v2)
      : win_(win), shift_(shift), heads_(heads), v2_(v2) {
    qkv = register_module("qkv", Linear(dim, 3 * dim));
    proj = register_module("proj", Linear(dim, dim));
    const int64_t span = 2 * win - 1;
    if (!v2) {
      relative_position_bias_table = register_parameter("relative_position_bias_table", torch::zeros({span * span, heads}));
      trunc_normal_(relative_position_bias_table, 0.02);
    } else {
      // Relative offsets scaled to [-8, 8], then log-spaced.
      at::Tensor r = torch::arange(-(win - 1), win, at::kFloat) / double(win - 1) * 8.0;
      auto grid = torch::meshgrid({r, r}, "ij");
      at::Tensor t = torch::stack({grid[0], grid[1]}, -1).unsqueeze(0);
      t = torch::sign(t) * torch::log2(t.abs() + 1.0) / 3.0;
      relative_coords_table = register_buffer("relative_coords_table", t);
      logit_scale = register_parameter("logit_scale", torch::full({heads, 1, 1}, std::log(10.0)));
      cpb_mlp = register_module("cpb_mlp", std::make_shared<Blocks>());
      cpb_mlp->add(Linear(2, 512).ptr());
      cpb_mlp->add(torch::nn::ReLU().ptr());
      cpb_mlp->add(Linear(torch::nn::LinearOptions(512, heads).bias(false)).ptr());
    }
    // Index into the (2w-1)^2 offsets for every pair of the w*w tokens.
    at::Tensor c = torch::arange(win);
    at::Tensor ys = c.repeat_interleave(win), xs = c.repeat(win);
    at::Tensor dy = ys.unsqueeze(1) - ys.unsqueeze(0) + (win - 1);
    at::Tensor dx = xs.unsqueeze(1) - xs.unsqueeze(0) + (win - 1);
    relative_position_index = register_buffer("relative_position_index", (dy * span + dx).flatten());
  }

  // 1 x heads x L x L.
  at::Tensor position_bias() {
    const int64_t len = win_ * win_;
    at::Tensor table = v2_ ? cpb_mlp->forward(relative_coords_table).view({-1, heads_}) : relative_position_bias_table;
    at::Tensor bias = table.index_select(0, relative_position_index).view({len, len, heads_}).permute({2, 0, 1}).unsqueeze(0);
    return v2_ ? 16.0 * torch::sigmoid(bias) : bias;
  }

  at::Tensor forward(const at::Tensor& input) {
    const int64_t h = input.size(1), w = input.size(2), dim = input.size(3), win = win_;
    const int64_t pad_r = (win - w % win) % win, pad_b = (win - h % win) % win;
    at::Tensor x = torch::constant_pad_nd(input, {0, 0, 0, pad_r, 0, pad_b});
    const int64_t ph = h + pad_b, pw = w + pad_r;
    // No shift along a side that one window already covers.
    const int64_t sh = win >= ph ? 0 : shift_, sw = win >= pw ? 0 : shift_;
    const bool shifted = sh + sw > 0;
    if (shifted) x = torch::roll(x, {-sh, -sw}, {1, 2});

    const int64_t nh = ph / win, nw = pw / win, len = win * win, hd = dim / heads_;
    x = x.view({-1, nh, win, nw, win, dim}).permute({0, 1, 3, 2, 4, 5}).reshape({-1, len, dim});
    at::Tensor b = qkv->bias;
    if (v2_) {  // V2 has no key bias: its slot is held at zero
      b = torch::cat({b.narrow(0, 0, dim), torch::zeros_like(b.narrow(0, dim, dim)), b.narrow(0, 2 * dim, dim)});
    }
    at::Tensor t = linear(x, qkv->weight, b).reshape({-1, len, 3, heads_, hd}).permute({2, 0, 3, 1, 4});
    at::Tensor q = t[0], k = t[1], v = t[2], attn;
    if (v2_) {
      namespace F = torch::nn::functional;
      attn = arch::matmul(F::normalize(q, F::NormalizeFuncOptions().dim(-1)),
                           F::normalize(k, F::NormalizeFuncOptions().dim(-1)).transpose(-2, -1));
      attn = attn * torch::clamp(logit_scale, c10::nullopt, std::log(100.0)).exp();
    } else {
      attn = arch::matmul(q * std::pow(double(hd), -0.5), k.transpose(-2, -1));
    }
    attn = attn + position_bias();
    if (shifted) {
      at::Tensor mask = shift_mask(ph, pw, win, sh, sw).to(attn.options());
      attn = (attn.view({-1, nh * nw, heads_, len, len}) + mask.unsqueeze(1).unsqueeze(0)).view({-1, heads_, len, len});
    }
    attn = torch::softmax(attn, -1);
    x = linear(proj, arch::matmul(attn, v).transpose(1, 2).reshape({-1, len, dim}));

    x = x.view({-1, nh, nw, win, win, dim}).permute({0, 1, 3, 2, 4, 5}).reshape({-1, ph, pw, dim});
    if (shifted) x = torch::roll(x, {sh, sw}, {1, 2});
    return x.narrow(1, 0, h).narrow(2, 0, w).contiguous();
  }

  Linear qkv{nullptr}, proj{nullptr};
  at::Tensor relative_position_bias_table, relative_position_index;  // v1 (index: both)
  at::Tensor relative_coords_table, logit_scale;                      // v2
  std::shared_ptr<Blocks> cpb_mlp;

 private:
  int64_t win_, shift_, heads_;
  bool v2_;
};

// SwinTransformerBlock (pre-norm) and SwinTransformerBlockV2 (post-norm);
// stochastic depth is the identity in eval.
class SwinBlock : public torch::nn::Module {
 public:
  SwinBlock(int64_t dim, int64_t heads, int64_t win, int64_t shift, bool v2) : v2_(v2) {
    norm1 = register_module("norm1", layer_norm(dim, 1e-5));
    attn = register_module("attn", std::make_shared<WindowAttention>(dim, win, shift, heads, v2));
    norm2 = register_module("norm2", layer_norm(dim, 1e-5));
    mlp = register_module("mlp", Mlp(dim, 4 * dim));
  }
  at::Tensor forward(at::Tensor x) {
    if (v2_) {
      x = x + norm1(attn->forward(x));
      return x + norm2(mlp(x));
    }
    x = x + attn->forward(norm1(x));
    return x + mlp(norm2(x));
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<WindowAttention> attn;
  Mlp mlp{nullptr};

 private:
  bool v2_;
};

struct SwinConfig {
  const char* name;
  int64_t embed_dim;
  std::array<int64_t, 4> depths, heads;
  int64_t window;
  bool v2;
};

class SwinTransformerImpl : public ClassifierModuleImpl {
 public:
  SwinTransformerImpl(const SwinConfig& c, int64_t num_classes) {
    features = register_module("features", std::make_shared<Blocks>());
    features->add(std::make_shared<PatchEmbed>(c.embed_dim, 4));
    for (size_t s = 0; s < 4; ++s) {
      const int64_t dim = c.embed_dim << s;
      auto stage = std::make_shared<Chain<std::shared_ptr<SwinBlock>>>();
      for (int64_t i = 0; i < c.depths[s]; ++i)
        stage->push_back(std::make_shared<SwinBlock>(dim, c.heads[s], c.window, i % 2 ? c.window / 2 : 0, c.v2));
      features->add(stage);
      if (s < 3) features->add(std::make_shared<PatchMerging>(dim, c.v2));
    }
    const int64_t out = c.embed_dim << 3;
    norm = register_module("norm", layer_norm(out, 1e-5));
    head = register_module("head", Linear(out, num_classes));
    // torchvision's initialisation of every Linear.
    for (auto& m : modules(false))
      if (auto* l = m->as<Linear>()) {
        trunc_normal_(l->weight, 0.02);
        if (l->bias.defined()) torch::nn::init::zeros_(l->bias);
      }
  }

  at::Tensor embed(const at::Tensor& x) override {
    at::Tensor y = norm(features->forward(x)).permute({0, 3, 1, 2});
    return torch::adaptive_avg_pool2d(y, {1, 1}).flatten(1);
  }
  at::Tensor logits(const at::Tensor& f) override { return head(f); }

  std::shared_ptr<Blocks> features;
  torch::nn::LayerNorm norm{nullptr};
  Linear head{nullptr};
};

const SwinConfig kConfigs[] = {
    {"swin_t", 96, {2, 2, 6, 2}, {3, 6, 12, 24}, 7, false},
    {"swin_s", 96, {2, 2, 18, 2}, {3, 6, 12, 24}, 7, false},
    {"swin_b", 128, {2, 2, 18, 2}, {4, 8, 16, 32}, 7, false},
    {"swin_v2_t", 96, {2, 2, 6, 2}, {3, 6, 12, 24}, 8, true},
    {"swin_v2_s", 96, {2, 2, 18, 2}, {3, 6, 12, 24}, 8, true},
    {"swin_v2_b", 128, {2, 2, 18, 2}, {4, 8, 16, 32}, 8, true},
};

}  // namespace

ClassifierModulePtr make_swin(const std::string& name, const ArchParams& p) {
  for (const auto& c : kConfigs)
    if (name == c.name) return std::make_shared<SwinTransformerImpl>(c, p.num_classes);
  throw ModelError("unknown swin transformer variant '" + name + "'");
}

}  // namespace ptm::arch
