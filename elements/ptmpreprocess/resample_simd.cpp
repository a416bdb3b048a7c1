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

// One output pair, one per 128-bit lane: a step loads 16 bytes at each
// output's next two taps, spreads their R, G and B over int16 pairs
// (tap, tap + 1) and multiply-adds them with the pair's low and high
// weights. STEPS > 0: that many steps, unrolled; 0: `n` of them.
template <int STEPS>
__attribute__((target("avx2"), always_inline)) inline __m256i hpair_avx2(const uint8_t* pa, const uint8_t* pb,
                                                                         size_t step, const __m256i* w, int n,
                                                                         __m256i mask) {
  __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
  const int steps = STEPS > 0 ? STEPS : n;
#pragma GCC unroll 8
  for (int j = 0; j < steps; ++j) {
    const size_t o = size_t(j) * step;
    __m256i d = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pa + o))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(pb + o)), 1);
    d = _mm256_shuffle_epi8(d, mask);
    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(d, _mm256_loadu_si256(w + 2 * j)));
    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(d, _mm256_loadu_si256(w + 2 * j + 1)));
  }
  return _mm256_add_epi32(_mm256_slli_epi32(hi, kSplit), lo);
}

// Two outputs a loop (hpair_avx2). Returns the first output it left to the
// scalar loop (source bytes it may not read, or an odd one out).
__attribute__((target("avx2"))) int hpass_avx2(const HTable& t, const uint8_t* src, size_t readable, int bpp, int r,
                                               int g, int b, uint8_t* dst) {
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
  const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(m));
  const __m256i round = _mm256_set1_epi32(1 << (kBits - 1));
  const size_t step = size_t(2 * bpp);
  const int pairs = t.outputs / 2;
  int q = 0;
  for (; q < pairs; ++q) {
    if (size_t(t.reach[size_t(q)]) * size_t(bpp) + 16 > readable) break;
    const uint8_t* pa = src + size_t(t.first[size_t(2 * q)]) * size_t(bpp);
    const uint8_t* pb = src + size_t(t.first[size_t(2 * q + 1)]) * size_t(bpp);
    const __m256i* w = reinterpret_cast<const __m256i*>(&t.vectors[t.offset[size_t(q)]]);
    const int n = t.steps[size_t(q)];
    __m256i v;
    switch (n) {  // the usual tap counts, unrolled (2x to 4x shrinks: 5 to 9 taps)
      case 2: v = hpair_avx2<2>(pa, pb, step, w, n, mask); break;
      case 3: v = hpair_avx2<3>(pa, pb, step, w, n, mask); break;
      case 4: v = hpair_avx2<4>(pa, pb, step, w, n, mask); break;
      case 5: v = hpair_avx2<5>(pa, pb, step, w, n, mask); break;
      case 6: v = hpair_avx2<6>(pa, pb, step, w, n, mask); break;
      default: v = hpair_avx2<0>(pa, pb, step, w, n, mask); break;
    }
    v = _mm256_srai_epi32(_mm256_add_epi32(v, round), kBits);
    v = _mm256_packs_epi32(v, v);
    v = _mm256_packus_epi16(v, v);  // lane 0: A's R, G, B, 0; lane 1: B's
    const int32_t a = _mm256_cvtsi256_si32(v), c = _mm_cvtsi128_si32(_mm256_extracti128_si256(v, 1));
    std::memcpy(dst + size_t(q) * 6, &a, 4);
    std::memcpy(dst + size_t(q) * 6 + 3, &c, 4);  // over A's fourth byte
  }
  return 2 * q;
}

// 16 bytes a loop: each step interleaves two tap rows' bytes into int16
// pairs and multiply-adds them with the pair's weights. Returns the bytes done.
__attribute__((target("avx2"))) size_t vpass_avx2(const VTable& t, int y, const uint8_t* first, size_t stride,
                                                  size_t bytes, uint8_t* dst) {
  const int n = t.count[size_t(y)], steps = (n + 1) / 2;
  const int32_t* halves = &t.halves[size_t(y) * size_t(t.steps) * 2];
  const __m256i round = _mm256_set1_epi32(1 << (kBits - 1));
  size_t i = 0;
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

HTable make_htable(const std::vector<int32_t>& first, const std::vector<int32_t>& count,
                   const std::vector<int32_t>& weights, int k, int origin) {
  HTable t;
  t.outputs = int(first.size());
  t.k = k;
  t.first.resize(first.size());
  for (size_t x = 0; x < first.size(); ++x) t.first[x] = first[x] - origin;
  t.count = count;
  t.weights = weights;
  t.vector = std::all_of(weights.begin(), weights.end(), splits);
  if (!t.vector) return t;
  const int pairs = t.outputs / 2;
  for (int q = 0; q < pairs; ++q) {
    const size_t a = size_t(2 * q), b = a + 1;
    const int steps = (std::max(count[a], count[b]) + 1) / 2;
    t.steps.push_back(steps);
    t.reach.push_back(std::max(t.first[a], t.first[b]) + 2 * (steps - 1));
    t.offset.push_back(t.vectors.size());
    auto w = [&](size_t x, int i) { return i < count[x] ? weights[x * size_t(k) + size_t(i)] : 0; };
    for (int j = 0; j < steps; ++j) {
      for (size_t x : {a, b}) t.vectors.insert(t.vectors.end(), 4, low_pair(w(x, 2 * j), w(x, 2 * j + 1)));
      for (size_t x : {a, b}) t.vectors.insert(t.vectors.end(), 4, high_pair(w(x, 2 * j), w(x, 2 * j + 1)));
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

void hpass(const HTable& t, const uint8_t* src, size_t readable, int bpp, int r, int g, int b, uint8_t* dst) {
  int from = 0;
#ifdef PTM_SIMD_X86
  if (t.vector && available()) from = hpass_avx2(t, src, readable, bpp, r, g, b, dst);
#else
  (void)readable;
#endif
  hpass_scalar(t, src, bpp, r, g, b, from, dst);
}

void vpass(const VTable& t, int y, const uint8_t* first, size_t stride, size_t bytes, uint8_t* dst) {
  size_t from = 0;
#ifdef PTM_SIMD_X86
  if (t.vector && available()) from = vpass_avx2(t, y, first, stride, bytes, dst);
#endif
  vpass_scalar(t, y, first, stride, from, bytes, dst);
}

}  // namespace ptm::simd
