// Pieces shared by the transformer architectures (vit.cpp, swin.cpp);
// private to models/arch.
#pragma once

#include "common.h"

namespace ptm::arch {

inline torch::nn::LayerNorm layer_norm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

// nn.init.trunc_normal_ as torchvision calls it: cut at +-2 absolute, which
// for these small deviations only trims values that never occur. Nothing
// when weights follow (random_init()).
inline void trunc_normal_(at::Tensor t, double std) {
  if (!random_init()) return;
  at::NoGradGuard ng;
  t.normal_(0.0, std).clamp_(-2.0, 2.0);
}

inline at::Tensor linear(const Linear& l, const at::Tensor& x) { return linear(x, l->weight, l->bias); }

// torchvision.ops.MLP(in, [hidden, out], activation_layer=nn.GELU):
// Linear "0", GELU, Dropout, Linear "3", Dropout (keys 0 and 3); timm's Mlp
// names them fc1 and fc2.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t hidden, const char* fc1 = "0", const char* fc2 = "3") {
    fc1_ = register_module(fc1, Linear(dim, hidden));
    fc2_ = register_module(fc2, Linear(hidden, dim));
  }
  at::Tensor forward(const at::Tensor& x) { return linear(fc2_, linear_gelu(x, fc1_->weight, fc1_->bias)); }
  std::vector<Linear> linears() const { return {fc1_, fc2_}; }

 private:
  Linear fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace ptm::arch
