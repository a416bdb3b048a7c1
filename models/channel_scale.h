// y = x * s with s one value a channel and image (a squeeze-and-excitation
// scale), for the oneDNN graph executor (models/dnnl_graph.cpp): one pass
// over x, split between the calling thread's OpenMP team (the threads
// oneDNN's primitives of that thread run on, one libgomp shared with them)
// where x is large. Plain C++ built with OpenMP, apart from LibTorch's
// headers (whose at::parallel_for is only parallel in a file built so).
#pragma once

#include <cstdint>

namespace ptm {

// x and y (y may be x): `images` images, each `outer` runs of `inner`
// floats; `block` says which channel value k of run r is in:
//   0: planar (NCHW): channel r % channels, the run its pixels (inner = H*W);
//   1: channels last (NHWC): channel k (inner = channels);
//   b > 1: channels in blocks of b (nChw8c, nChw16c): channel
//      (r / hw) * b + k (inner = b; `hw` pixels a block).
// s: images x channels.
void scale_channels(const float* x, const float* s, float* y, int64_t images, int64_t channels, int64_t outer,
                    int64_t inner, int64_t block, int64_t hw);

}  // namespace ptm
