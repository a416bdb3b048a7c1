// A frozen classifier graph run on oneDNN primitives directly: every
// activation kept in the blocked layout oneDNN picks for it from one layer
// to the next, weights reordered once into the layout their convolution
// wants, activations and residual adds fused into the convolution before
// them (eltwise and sum post-ops), buffers reused along the graph.
// Only built where LibTorch itself runs on the system's oneDNN (Debian's
// LibTorch does), so that both share one library.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace at {
class Tensor;
}
namespace torch::jit {
struct Module;
}

namespace ptm {

class DnnlGraph {
 public:
  // The graph of a frozen module (weights as constants, BatchNorm folded),
  // or nullptr with `why` set where it holds an op this executor does not
  // take (the caller keeps LibTorch's graph then).
  static std::unique_ptr<DnnlGraph> compile(torch::jit::Module& frozen, std::string* why);
  ~DnnlGraph();

  // x: float32 N x C x H x W on the CPU. Returns N x classes. Plans (the
  // primitives for one input shape, and where in the graph's arena each
  // activation lives) are made on first use of a shape; the 8 shapes run
  // last are kept. Throws ModelError naming what failed.
  at::Tensor run(const at::Tensor& x);
  // Bytes held for activations, and for oneDNN's scratchpad: each one
  // block shared by every plan (one runs at a time), as large as the
  // plans made so far need at most.
  size_t activation_bytes();
  size_t scratchpad_bytes();

  // int8 (precision=int8 on ptm's own executor). calibrate() runs x
  // (float32) as run() does and records the range of every value the graph
  // makes; int8() is then a copy of this graph whose convolutions take
  // 8-bit activations (u8 where a value never went below zero, else s8,
  // one scale a value from its recorded range) and s8 weights (one scale an
  // output channel), requantize their outputs in place of writing float32
  // (activations and residual adds fused as before), max pooling staying in
  // 8 bits; the other ops run float32 on dequantized values, the head
  // included. It needs a CPU with VNNI (8-bit products summed in 32 bits);
  // nullptr with `why` set where nothing was recorded.
  at::Tensor calibrate(const at::Tensor& x);
  void clear_ranges();
  std::unique_ptr<DnnlGraph> int8(std::string* why) const;
  // How many convolutions run in 8 bits in the plans made so far (the
  // most of any one plan); 0 for a float graph.
  int int8_convolutions();

  // How many convolutions carry a fused activation / residual add.
  int fused_activations() const;
  int fused_adds() const;
  // How many convolutions run as Winograd (oneDNN 2.x, float32, 3x3
  // stride 1) in the plans made so far (the most of any one plan).
  // PTM_DNNL_WINOGRAD=0 keeps every convolution direct.
  int winograd_convolutions();
  // How many squeeze-and-excitation products (x times one value a channel)
  // run as ptm's own pass instead of oneDNN's binary primitive, in the
  // plans made so far (the most of any one plan).
  int channel_scales();
  // How many were folded into the 1x1 convolution after them instead (the
  // weights scaled each pass: one image, fewer weights than values in x),
  // in the plans made so far (the most of any one plan).
  // PTM_DNNL_FOLD_SCALES=0 folds none.
  int folded_scales();
  // oneDNN's version, "3.7.2".
  static std::string version();

  // Tests: plans made from now on (by any graph) leave a guard band after
  // each activation buffer and after the scratchpad they use, filled with
  // a pattern before each pass and checked after every step; a step that
  // wrote into one throws ModelError naming it. Off by default: with it on,
  // every step is waited for before the next starts.
  static void check_bounds(bool on);

 private:
  DnnlGraph();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ptm
