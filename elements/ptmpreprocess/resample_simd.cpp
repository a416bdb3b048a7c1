#include "resample_simd.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PTM_SIMD_X86 1
#endif

namespace ptm::simd {

namespace {

constexpr int kBits = 22;  // Pillow's precision for 8-bit data
constexpr int kSplit = 11;

inline uint8_t clip8(int32_t v) {
  v >>= kBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// The low and high parts of two taps' weights, as the multiply-add reads
// them: two int16 in an int32, the first tap's in the low half.
inline int32_t low_pair(int32_t w0, int32_t w1) { return int32_t(uint32_t(w0 & 2047) | uint32_t(w1 & 2047) << 16); }
inline int32_t high_pair(int32_t w0, int32_t w1) {
  return int32_t(uint32_t(uint16_t(int16_t(w0 >> kSplit))) | uint32_t(uint16_t(int16_t(w1 >> kSplit))) << 16);
}
// |w| < 2^26: the high part fits an int16.
inline bool splits(int32_t w) { return w > -(1 << 26) && w < (1 << 26); }

void hpass_scalar(const HTable& t, const uint8_t* src, int bpp, int r, int g, int b, int from, uint8_t* dst) {
  for (int x = from; x < t.outputs; ++x) {
    const uint8_t* p = src + size_t(t.first[size_t(x)]) * size_t(bpp);
    const int32_t* k = &t.weights[size_t(x) * size_t(t.k)];
    int32_t s0 = 1 << (kBits - 1), s1 = s0, s2 = s0;
    for (int i = 0; i < t.count[size_t(x)]; ++i, p += bpp) {
      s0 += p[r] * k[i];
      s1 += p[g] * k[i];
      s2 += p[b] * k[i];
    }
    dst[size_t(x) * 3] = clip8(s0);
    dst[size_t(x) * 3 + 1] = clip8(s1);
    dst[size_t(x) * 3 + 2] = clip8(s2);
  }
}

void vpass_scalar(const VTable& t, int y, const uint8_t* first, size_t stride, size_t from, size_t bytes,
                  uint8_t* dst) {
  const int32_t* k = &t.weights[size_t(y) * size_t(t.k)];
  const int n = t.count[size_t(y)];
  for (size_t i = from; i < bytes; ++i) {
    int32_t s = 1 << (kBits - 1);
    const uint8_t* p = first + i;
    for (int j = 0; j < n; ++j, p += stride) s += *p * k[j];
    dst[i] = clip8(s);
  }
}

#ifdef PTM_SIMD_X86

// One output pair, one per 128-bit lane, in each of R rows: a step loads
// 16 bytes at each output's next two taps (byte offsets `a` and `b` of the
// row, then a step further each step), spreads their R, G and B over int16
// pairs (tap, tap + 1) and multiply-adds them with the pair's low and high
// weights, loaded once a step for all the rows. STEPS > 0: that many steps,
// unrolled; 0: `n` of them.
template <int STEPS, int R>
__attribute__((target("avx2"), always_inline)) inline void hpair_avx2(const uint8_t* const* src, size_t a, size_t b,
                                                                      size_t step, const __m256i* w, int n,
                                                                      __m256i mask, __m256i* out) {
  __m256i lo[R], hi[R];
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm256_setzero_si256();
  const int steps = STEPS > 0 ? STEPS : n;
#pragma GCC unroll 8
  for (int j = 0; j < steps; ++j) {
    const size_t o = size_t(j) * step;
    const __m256i wl = _mm256_loadu_si256(w + 2 * j), wh = _mm256_loadu_si256(w + 2 * j + 1);
    for (int i = 0; i < R; ++i) {
      __m256i d = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src[i] + a + o))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[i] + b + o)), 1);
      d = _mm256_shuffle_epi8(d, mask);
      lo[i] = _mm256_add_epi32(lo[i], _mm256_madd_epi16(d, wl));
      hi[i] = _mm256_add_epi32(hi[i], _mm256_madd_epi16(d, wh));
    }
  }
  for (int i = 0; i < R; ++i) out[i] = _mm256_add_epi32(_mm256_slli_epi32(hi[i], kSplit), lo[i]);
}

// The byte shuffle of hpair_avx2 for pixels of `bpp` bytes with R, G and B
// at r, g, b: per lane, each channel's bytes at the two taps as int16s.
__attribute__((target("avx2"), always_inline)) inline __m256i pair_mask(int bpp, int r, int g, int b) {
  alignas(32) int8_t m[32];
  const int at[3] = {r, g, b};
  for (int lane = 0; lane < 2; ++lane) {
    int8_t* l = m + 16 * lane;
    for (int c = 0; c < 3; ++c) {
      l[4 * c] = int8_t(at[c]);
      l[4 * c + 1] = -128;  // zero: the high byte of the int16
      l[4 * c + 2] = int8_t(bpp + at[c]);
      l[4 * c + 3] = -128;
    }
    for (int i = 12; i < 16; ++i) l[i] = -128;
  }
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
}

// Output pair q (outputs 2q and 2q + 1) of R rows into each dst[i], and
// one byte after it; false (nothing written) where its reads would pass
// `readable` (the same in every row).
template <int R>
__attribute__((target("avx2"), always_inline)) inline bool hpair_out(const HTable& t, int q,
                                                                     const uint8_t* const* src, size_t readable,
                                                                     int bpp, __m256i mask, uint8_t* const* dst) {
  if (size_t(t.reach[size_t(q)]) * size_t(bpp) + 16 > readable) return false;
  const size_t step = size_t(2 * bpp);
  const size_t a = size_t(t.first[size_t(2 * q)]) * size_t(bpp), b = size_t(t.first[size_t(2 * q + 1)]) * size_t(bpp);
  const __m256i* w = reinterpret_cast<const __m256i*>(&t.vectors[t.offset[size_t(q)]]);
  const int n = t.steps[size_t(q)];
  __m256i v[R];
  switch (n) {  // the usual tap counts, unrolled (2x to 4x shrinks: 5 to 9 taps)
    case 2: hpair_avx2<2, R>(src, a, b, step, w, n, mask, v); break;
    case 3: hpair_avx2<3, R>(src, a, b, step, w, n, mask, v); break;
    case 4: hpair_avx2<4, R>(src, a, b, step, w, n, mask, v); break;
    case 5: hpair_avx2<5, R>(src, a, b, step, w, n, mask, v); break;
    case 6: hpair_avx2<6, R>(src, a, b, step, w, n, mask, v); break;
    default: hpair_avx2<0, R>(src, a, b, step, w, n, mask, v); break;
  }
  for (int i = 0; i < R; ++i) {
    __m256i c = _mm256_srai_epi32(_mm256_add_epi32(v[i], _mm256_set1_epi32(1 << (kBits - 1))), kBits);
    c = _mm256_packs_epi32(c, c);
    c = _mm256_packus_epi16(c, c);  // lane 0: A's R, G, B, 0; lane 1: B's
    const int32_t x = _mm256_cvtsi256_si32(c), y = _mm_cvtsi128_si32(_mm256_extracti128_si256(c, 1));
    std::memcpy(dst[i] + size_t(q) * 6, &x, 4);
    std::memcpy(dst[i] + size_t(q) * 6 + 3, &y, 4);  // over A's fourth byte
  }
  return true;
}

// Two outputs a loop (hpair_avx2) in R rows at once. Returns the first
// output it left to the scalar loop (source bytes it may not read, or an
// odd one out; the same in every row).
template <int R>
__attribute__((target("avx2"))) int hpass_avx2(const HTable& t, const uint8_t* const* src, size_t readable, int bpp,
                                               int r, int g, int b, uint8_t* const* dst) {
  const __m256i mask = pair_mask(bpp, r, g, b);
  const int pairs = t.outputs / 2;
  int q = 0;
  while (q < pairs && hpair_out<R>(t, q, src, readable, bpp, mask, dst)) ++q;
  return 2 * q;
}

// GCC 12 takes the placeholder its AVX-512 intrinsics pass for unused
// merge sources (_mm512_undefined_epi32) for an uninitialised read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// One output quad, one per 128-bit lane, in each of R rows: a step loads
// the 128 bytes from the quad's next two taps on, and one two-source byte
// permute (VBMI) spreads each output's R, G and B at its two taps over
// int16 pairs (the quad's `index`; the int16s' high bytes zeroed by the
// mask), multiply-added into the sums with the low and high weights (VNNI:
// one instruction each, the same wrapping 32-bit sums as hpair_avx2's
// multiply-add then add). The rows share the step's weights (loaded once)
// and their sums are independent chains.
template <int STEPS, int R>
__attribute__((target("avx2,avx512f,avx512bw,avx512vbmi,avx512vnni"), always_inline)) inline void hquad_avx512(
    const uint8_t* const* p, size_t at, size_t step, const __m512i* w, int n, __m512i index, __m512i* out) {
  constexpr __mmask64 kLowBytes = 0x0555055505550555ull;  // per lane: bytes 0, 2, ..., 10
  __m512i lo[R], hi[R];
  for (int i = 0; i < R; ++i) lo[i] = hi[i] = _mm512_setzero_si512();
  const int steps = STEPS > 0 ? STEPS : n;
#pragma GCC unroll 8
  for (int j = 0; j < steps; ++j) {
    const __m512i wl = _mm512_loadu_si512(w + 2 * j), wh = _mm512_loadu_si512(w + 2 * j + 1);
    for (int i = 0; i < R; ++i) {
      const uint8_t* q = p[i] + at + size_t(j) * step;
      const __m512i d =
          _mm512_maskz_permutex2var_epi8(kLowBytes, _mm512_loadu_si512(q), index, _mm512_loadu_si512(q + 64));
      lo[i] = _mm512_dpwssd_epi32(lo[i], d, wl);
      hi[i] = _mm512_dpwssd_epi32(hi[i], d, wh);
    }
  }
  for (int i = 0; i < R; ++i) out[i] = _mm512_add_epi32(_mm512_slli_epi32(hi[i], kSplit), lo[i]);
}

// Four outputs a loop (hquad_avx512) in R rows at once; a quad whose pixels
// lie too far apart for its loads, or whose loads would pass `readable`
// (the same in every row), runs as two pairs. Returns the first output it
// left to the scalar loop (the same in every row).
template <int R>
__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni"))) int hpass_avx512(
    const HTable& t, const uint8_t* const* src, size_t readable, int bpp, int r, int g, int b, uint8_t* const* dst) {
  const __m256i mask = pair_mask(bpp, r, g, b);
  const __m512i round = _mm512_set1_epi32(1 << (kBits - 1));
  const __m128i compact = _mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  const size_t step = size_t(2 * bpp);
  const int quads = t.outputs / 4;
  for (int q = 0; q < quads; ++q) {
    const int reach = t.quad_reach[size_t(q)];
    if (reach < 0 || size_t(reach) * size_t(bpp) + 128 > readable) {
      if (!hpair_out<R>(t, 2 * q, src, readable, bpp, mask, dst)) return 4 * q;
      if (!hpair_out<R>(t, 2 * q + 1, src, readable, bpp, mask, dst)) return 4 * q + 2;
      continue;
    }
    const size_t at = size_t(t.quad_first[size_t(q)]) * size_t(bpp);
    const __m512i* w = reinterpret_cast<const __m512i*>(&t.quad_vectors[t.quad_offset[size_t(q)]]);
    const __m512i index = _mm512_loadu_si512(&t.quad_index[size_t(q) * 64]);
    const int n = t.quad_steps[size_t(q)];
    __m512i v[R];
    switch (n) {
      case 2: hquad_avx512<2, R>(src, at, step, w, n, index, v); break;
      case 3: hquad_avx512<3, R>(src, at, step, w, n, index, v); break;
      case 4: hquad_avx512<4, R>(src, at, step, w, n, index, v); break;
      case 5: hquad_avx512<5, R>(src, at, step, w, n, index, v); break;
      case 6: hquad_avx512<6, R>(src, at, step, w, n, index, v); break;
      default: hquad_avx512<0, R>(src, at, step, w, n, index, v); break;
    }
    for (int i = 0; i < R; ++i) {
      const __m512i c =
          _mm512_max_epi32(_mm512_srai_epi32(_mm512_add_epi32(v[i], round), kBits), _mm512_setzero_si512());
      // Unsigned saturation clips above 255; R, G, B, 0 a lane -> 12 bytes.
      const __m128i bytes = _mm_shuffle_epi8(_mm512_cvtusepi32_epi8(c), compact);
      _mm_mask_storeu_epi8(dst[i] + size_t(q) * 12, __mmask16(0x0FFF), bytes);
    }
  }
  const int pairs = t.outputs / 2;
  int q = 2 * quads;
  while (q < pairs && hpair_out<R>(t, q, src, readable, bpp, mask, dst)) ++q;
  return 2 * q;
}

#pragma GCC diagnostic pop

// 16 bytes a loop from byte `i` on: each step interleaves two tap rows'
// bytes into int16 pairs and multiply-adds them with the pair's weights.
// Returns the bytes done.
__attribute__((target("avx2"))) size_t vpass_avx2(const VTable& t, int y, const uint8_t* first, size_t stride,
                                                  size_t i, size_t bytes, uint8_t* dst) {
  const int n = t.count[size_t(y)], steps = (n + 1) / 2;
  const int32_t* halves = &t.halves[size_t(y) * size_t(t.steps) * 2];
  const __m256i round = _mm256_set1_epi32(1 << (kBits - 1));
  for (; i + 16 <= bytes; i += 16) {
    __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    for (int j = 0; j < steps; ++j) {
      const uint8_t* row = first + i + size_t(2 * j) * stride;
      // An odd count's last step pairs its row with itself at weight 0.
      const uint8_t* next = 2 * j + 1 < n ? row + stride : row;
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(next));
      const __m256i d0 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, c));
      const __m256i d1 = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, c));
      const __m256i wl = _mm256_set1_epi32(halves[2 * j]), wh = _mm256_set1_epi32(halves[2 * j + 1]);
      lo0 = _mm256_add_epi32(lo0, _mm256_madd_epi16(d0, wl));
      hi0 = _mm256_add_epi32(hi0, _mm256_madd_epi16(d0, wh));
      lo1 = _mm256_add_epi32(lo1, _mm256_madd_epi16(d1, wl));
      hi1 = _mm256_add_epi32(hi1, _mm256_madd_epi16(d1, wh));
    }
    const __m256i v0 =
        _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi0, kSplit), lo0), round), kBits);
    const __m256i v1 =
        _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi1, kSplit), lo1), round), kBits);
    // packs works within lanes: bytes 0-3, 8-11 | 4-7, 12-15; put them in order.
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
  }
  return i;
}

// (GCC 12's placeholder for unused merge sources again.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Sixteen sums (high and low parts) rounded, shifted and clipped to bytes
// (unsigned saturation clips above 255 once negatives are 0).
__attribute__((target("avx2,avx512f,avx512bw,avx512vl"), always_inline)) inline __m128i vbytes_avx512(
    __m512i lo, __m512i hi, __m512i round) {
  const __m512i v =
      _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(hi, kSplit), lo), round), kBits);
  return _mm512_cvtusepi32_epi8(_mm512_max_epi32(v, _mm512_setzero_si512()));
}

// As vpass_avx2, 32 bytes a loop, the sums multiply-added in one
// instruction (VNNI). Returns the bytes done.
__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni"))) size_t vpass_avx512(
    const VTable& t, int y, const uint8_t* first, size_t stride, size_t bytes, uint8_t* dst) {
  const int n = t.count[size_t(y)], steps = (n + 1) / 2;
  const int32_t* halves = &t.halves[size_t(y) * size_t(t.steps) * 2];
  const __m512i round = _mm512_set1_epi32(1 << (kBits - 1));
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    __m512i lo0 = _mm512_setzero_si512(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    for (int j = 0; j < steps; ++j) {
      const uint8_t* row = first + i + size_t(2 * j) * stride;
      // An odd count's last step pairs its row with itself at weight 0.
      const uint8_t* next = 2 * j + 1 < n ? row + stride : row;
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(next));
      // Within 128-bit halves: d0 holds bytes 0-7 and 16-23, d1 8-15 and 24-31.
      const __m512i d0 = _mm512_cvtepu8_epi16(_mm256_unpacklo_epi8(a, c));
      const __m512i d1 = _mm512_cvtepu8_epi16(_mm256_unpackhi_epi8(a, c));
      const __m512i wl = _mm512_set1_epi32(halves[2 * j]), wh = _mm512_set1_epi32(halves[2 * j + 1]);
      lo0 = _mm512_dpwssd_epi32(lo0, d0, wl);
      hi0 = _mm512_dpwssd_epi32(hi0, d0, wh);
      lo1 = _mm512_dpwssd_epi32(lo1, d1, wl);
      hi1 = _mm512_dpwssd_epi32(hi1, d1, wh);
    }
    const __m128i b0 = vbytes_avx512(lo0, hi0, round), b1 = vbytes_avx512(lo1, hi1, round);  // 0-7, 16-23 | 8-15, 24-31
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm_unpacklo_epi64(b0, b1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i + 16), _mm_unpackhi_epi64(b0, b1));
  }
  return i;
}

#pragma GCC diagnostic pop

#endif

}  // namespace

bool available() {
#ifdef PTM_SIMD_X86
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

Kernels best_kernels() {
#ifdef PTM_SIMD_X86
  static const bool avx512 = available() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
                             __builtin_cpu_supports("avx512vnni");
  return avx512 ? Kernels::Avx512 : available() ? Kernels::Avx2 : Kernels::Plain;
#else
  return Kernels::Plain;
#endif
}

const char* kernels_name(Kernels k) {
  switch (k) {
    case Kernels::Avx512: return "AVX-512 VBMI/VNNI";
    case Kernels::Avx2: return "AVX2";
    default: return "plain loops";
  }
}

HTable make_htable(const std::vector<int32_t>& first, const std::vector<int32_t>& count,
                   const std::vector<int32_t>& weights, int k, int origin, int bpp, int r, int g, int b) {
  HTable t;
  t.outputs = int(first.size());
  t.k = k;
  t.first.resize(first.size());
  for (size_t x = 0; x < first.size(); ++x) t.first[x] = first[x] - origin;
  t.count = count;
  t.weights = weights;
  t.vector = std::all_of(weights.begin(), weights.end(), splits);
  if (!t.vector) return t;
  // Output x's tap i (0 past its count).
  auto w = [&](size_t x, int i) { return i < count[x] ? weights[x * size_t(k) + size_t(i)] : 0; };
  const int pairs = t.outputs / 2;
  for (int q = 0; q < pairs; ++q) {
    const size_t a = size_t(2 * q), b = a + 1;
    const int steps = (std::max(count[a], count[b]) + 1) / 2;
    t.steps.push_back(steps);
    t.reach.push_back(std::max(t.first[a], t.first[b]) + 2 * (steps - 1));
    t.offset.push_back(t.vectors.size());
    for (int j = 0; j < steps; ++j) {
      for (size_t x : {a, b}) t.vectors.insert(t.vectors.end(), 4, low_pair(w(x, 2 * j), w(x, 2 * j + 1)));
      for (size_t x : {a, b}) t.vectors.insert(t.vectors.end(), 4, high_pair(w(x, 2 * j), w(x, 2 * j + 1)));
    }
  }
  const int quads = t.outputs / 4;
  const int at[3] = {r, g, b};
  t.quad_index.assign(size_t(quads) * 64, 0);
  for (int q = 0; q < quads; ++q) {
    const size_t x0 = size_t(4 * q);
    int steps = 0, reach = t.first[x0];
    bool fits = true;
    for (size_t x = x0; x < x0 + 4; ++x) {
      const int d = t.first[x] - t.first[x0];
      steps = std::max(steps, (count[x] + 1) / 2);
      // Each lane reads its output's two taps at d and d + 1 pixels into
      // the step's 128 bytes.
      if (d < 0 || (d + 1) * bpp + std::max({r, g, b}) > 127) fits = false;
      for (int c = 0; c < 3 && fits; ++c) {
        uint8_t* lane = &t.quad_index[size_t(q) * 64 + (x - x0) * 16];
        lane[4 * c] = uint8_t(d * bpp + at[c]);
        lane[4 * c + 2] = uint8_t((d + 1) * bpp + at[c]);
      }
    }
    t.quad_first.push_back(t.first[x0]);
    t.quad_steps.push_back(steps);
    t.quad_reach.push_back(fits ? reach + 2 * (steps - 1) : -1);
    t.quad_offset.push_back(t.quad_vectors.size());
    for (int j = 0; j < steps; ++j) {
      for (size_t x = x0; x < x0 + 4; ++x)
        t.quad_vectors.insert(t.quad_vectors.end(), 4, low_pair(w(x, 2 * j), w(x, 2 * j + 1)));
      for (size_t x = x0; x < x0 + 4; ++x)
        t.quad_vectors.insert(t.quad_vectors.end(), 4, high_pair(w(x, 2 * j), w(x, 2 * j + 1)));
    }
  }
  return t;
}

VTable make_vtable(const std::vector<int32_t>& count, const std::vector<int32_t>& weights, int k) {
  VTable t;
  t.k = k;
  t.steps = (k + 1) / 2;
  t.count = count;
  t.weights = weights;
  t.vector = std::all_of(weights.begin(), weights.end(), splits);
  if (!t.vector) return t;
  t.halves.assign(count.size() * size_t(t.steps) * 2, 0);
  for (size_t y = 0; y < count.size(); ++y) {
    auto w = [&](int i) { return i < count[y] ? weights[y * size_t(k) + size_t(i)] : 0; };
    for (int j = 0; j < t.steps; ++j) {
      t.halves[(y * size_t(t.steps) + size_t(j)) * 2] = low_pair(w(2 * j), w(2 * j + 1));
      t.halves[(y * size_t(t.steps) + size_t(j)) * 2 + 1] = high_pair(w(2 * j), w(2 * j + 1));
    }
  }
  return t;
}

void hpass(const HTable& t, const uint8_t* const* src, int rows, size_t readable, int bpp, int r, int g, int b,
           uint8_t* const* dst, Kernels kernels) {
  kernels = std::min(kernels, best_kernels());
  int i = 0;
#ifdef PTM_SIMD_X86
  // Two rows a call (a step's weights loaded once for both, twice the
  // independent sums), an odd last row alone; the scalar loop finishes each.
  const auto rows_of = [&](auto kernel2, auto kernel1) {
    for (; i + 2 <= rows; i += 2) {
      const int from = kernel2(src + i, dst + i);
      hpass_scalar(t, src[i], bpp, r, g, b, from, dst[i]);
      hpass_scalar(t, src[i + 1], bpp, r, g, b, from, dst[i + 1]);
    }
    for (; i < rows; ++i) hpass_scalar(t, src[i], bpp, r, g, b, kernel1(src + i, dst + i), dst[i]);
  };
  using Rows = const uint8_t* const*;
  using Out = uint8_t* const*;
  if (t.vector && kernels == Kernels::Avx512)
    rows_of([&](Rows s, Out d) { return hpass_avx512<2>(t, s, readable, bpp, r, g, b, d); },
            [&](Rows s, Out d) { return hpass_avx512<1>(t, s, readable, bpp, r, g, b, d); });
  else if (t.vector && kernels == Kernels::Avx2)
    rows_of([&](Rows s, Out d) { return hpass_avx2<2>(t, s, readable, bpp, r, g, b, d); },
            [&](Rows s, Out d) { return hpass_avx2<1>(t, s, readable, bpp, r, g, b, d); });
#else
  (void)readable;
#endif
  for (; i < rows; ++i) hpass_scalar(t, src[i], bpp, r, g, b, 0, dst[i]);
}

void vpass(const VTable& t, int y, const uint8_t* first, size_t stride, size_t bytes, uint8_t* dst, Kernels kernels) {
  size_t from = 0;
#ifdef PTM_SIMD_X86
  kernels = std::min(kernels, best_kernels());
  if (t.vector && kernels == Kernels::Avx512) from = vpass_avx512(t, y, first, stride, bytes, dst);
  if (t.vector && kernels != Kernels::Plain) from = vpass_avx2(t, y, first, stride, from, bytes, dst);
#else
  (void)kernels;
#endif
  vpass_scalar(t, y, first, stride, from, bytes, dst);
}

}  // namespace ptm::simd
