// Vector kernels of the preprocessing core's two separable passes (AVX2 or
// AVX-512 on x86-64, chosen at run time; plain loops elsewhere), bit-exact with the
// scalar code: Pillow's fixed-point sums of 8-bit samples times 22-bit
// weights in 32-bit integers. Each weight is split into a high and a low
// 11-bit part so that both products fit the 16-bit multiply-add
// (sum = high sum * 2048 + low sum, exact in 32 bits). Used by
// preprocess_core.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ptm::simd {

// True when this CPU runs the vector kernels (x86-64 with AVX2).
bool available();

// Which kernels a pass runs: the plain loops, AVX2 (outputs two at a time)
// or AVX-512 with VBMI and VNNI (the horizontal pass four outputs at a
// time, byte permutes in place of AVX2's loads and shuffles; the vertical
// pass 32 bytes at a time; multiply-adds into the sums in one instruction;
// Ice Lake and later, AMD Zen 4). All give the same bytes.
enum class Kernels { Plain, Avx2, Avx512 };
// The fastest this CPU runs.
Kernels best_kernels();
const char* kernels_name(Kernels k);

// The horizontal pass of one plan axis as the kernel reads it: outputs two
// at a time (one per 128-bit lane), two taps a step.
struct HTable {
  int outputs = 0, k = 0;
  std::vector<int32_t> first, count, weights;  // per output, as in ResamplePlan (first relative to the block)
  bool vector = false;                         // weights fit the split (always, for Pillow's filters)
  std::vector<int32_t> steps;                  // per output pair: tap pairs
  std::vector<int32_t> reach;                  // per output pair: the last source pixel a step starts at
  std::vector<size_t> offset;                  // per output pair: its first vector in `vectors`
  std::vector<int32_t> vectors;                // per pair and step: low then high weights, 8 int32 each
  // Four outputs at a time (AVX-512): per quad, its first output's first
  // pixel, tap pairs, last pixel a step's two 64-byte loads start at (-1:
  // the quad's pixels lie too far apart for them: it runs as two pairs),
  // the byte permute that spreads its outputs' R, G and B over int16 pairs
  // (64 bytes), and per step low then high weights (16 int32 each).
  std::vector<int32_t> quad_first, quad_steps, quad_reach;
  std::vector<uint8_t> quad_index;
  std::vector<size_t> quad_offset;
  std::vector<int32_t> quad_vectors;
};

// The vertical pass: per output row, its taps' weights and their split
// halves (low, high) two taps an int32.
struct VTable {
  int k = 0, steps = 0;
  std::vector<int32_t> count, weights;  // per output row
  bool vector = false;
  std::vector<int32_t> halves;  // per output row: steps x (low, high)
};

// `first` is made relative to `origin` (the first source pixel the block
// holds); pixels of `bpp` bytes hold R, G and B at byte offsets r, g, b.
HTable make_htable(const std::vector<int32_t>& first, const std::vector<int32_t>& count,
                   const std::vector<int32_t>& weights, int k, int origin, int bpp, int r, int g, int b);
VTable make_vtable(const std::vector<int32_t>& count, const std::vector<int32_t>& weights, int k);

// `rows` rows: src[i] holds row i's source pixels of `bpp` bytes (3 or 4)
// from the block's origin, with R, G and B at byte offsets r, g, b;
// `readable` bytes may be read from each. Writes t.outputs RGB triplets to
// dst[i], and may write one byte after them. `kernels` above what the CPU
// runs counts as the best it does. (AVX-512 runs two rows at a time: the
// weights of a step are loaded once for both.)
void hpass(const HTable& t, const uint8_t* const* src, int rows, size_t readable, int bpp, int r, int g, int b,
           uint8_t* const* dst, Kernels kernels);

// Output row `y`: its taps are the rows first, first + stride, ... (as many
// as the row's count); dst[i] for i < bytes is their weighted sum (any
// bytes: the pass does not care which channel a byte is).
void vpass(const VTable& t, int y, const uint8_t* first, size_t stride, size_t bytes, uint8_t* dst, Kernels kernels);

}  // namespace ptm::simd
