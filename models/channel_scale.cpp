#include "channel_scale.h"

namespace ptm {

namespace {

// One run: out[k] = in[k] * sc[k], or times one value (planar). Built for
// AVX-512 and AVX2 as well as the base ISA, picked at load time.
__attribute__((target_clones("avx512f", "avx2", "default"))) void scale_run(const float* in, const float* sc,
                                                                             float sc_one, float* out, int64_t n,
                                                                             bool one) {
  if (one) {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) out[k] = in[k] * sc_one;
  } else {
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) out[k] = in[k] * sc[k];
  }
}

}  // namespace

void scale_channels(const float* x, const float* s, float* y, int64_t images, int64_t channels, int64_t outer,
                    int64_t inner, int64_t block, int64_t hw) {
  const int64_t runs = images * outer;
  // Under ~64 KB of floats one thread does it: waking the other costs more.
  const bool parallel = runs * inner >= 16384;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < runs; ++r) {
    const int64_t image = r / outer, within = r % outer;
    const float* sc = s + image * channels;
    if (block == 0) {
      scale_run(x + r * inner, nullptr, sc[within], y + r * inner, inner, true);
    } else {
      scale_run(x + r * inner, block == 1 ? sc : sc + (within / hw) * block, 0.f, y + r * inner, inner, false);
    }
  }
}

}  // namespace ptm
