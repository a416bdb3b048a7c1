// The preprocessing core against torchvision's PIL transforms
// (Resize/CenterCrop/ToTensor/Normalize) on the same pixels, for every input
// layout, odd sizes and padded strides.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>
#include <random>

#include "../common/fixtures.h"
#include "preprocess_core.h"

namespace ptm::test {
namespace {

std::vector<uint8_t> read_bytes(const std::string& name) {
  std::ifstream in(fixture(name), std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

PreprocessConfig config_named(const std::string& n) {
  PreprocessConfig c;
  if (n == "bilinear_256_224") return c;
  if (n == "bicubic_320_300") {
    c.filter = Filter::Bicubic;
    c.resize_size = 320;
    c.crop_width = c.crop_height = 300;
  } else if (n == "stretch_224") {
    c.mode = ResizeMode::Stretch;
  } else if (n == "bilinear_255_240") {
    c.resize_size = 255;
    c.crop_width = c.crop_height = 240;
  } else {
    throw std::runtime_error("unknown config " + n);
  }
  return c;
}

// An image repacked into `format` with `pad` extra bytes a row.
struct Packed {
  std::vector<uint8_t> data[3];
  FrameView view;
};

Packed pack(const std::vector<uint8_t>& rgb, int w, int h, PixelFormat fmt, int pad) {
  Packed p;
  p.view.format = fmt;
  p.view.width = w;
  p.view.height = h;
  auto px = [&](int x, int y, int c) { return rgb[(size_t(y) * size_t(w) + size_t(x)) * 3 + size_t(c)]; };
  struct L {
    PixelFormat f;
    int bpp, r, g, b, a;
  };
  const L layouts[] = {{PixelFormat::RGB, 3, 0, 1, 2, -1},  {PixelFormat::BGR, 3, 2, 1, 0, -1},
                       {PixelFormat::RGBA, 4, 0, 1, 2, 3},  {PixelFormat::BGRx, 4, 2, 1, 0, 3},
                       {PixelFormat::xRGB, 4, 1, 2, 3, 0},  {PixelFormat::ABGR, 4, 3, 2, 1, 0},
                       {PixelFormat::RGBx, 4, 0, 1, 2, 3},  {PixelFormat::BGRA, 4, 2, 1, 0, 3},
                       {PixelFormat::ARGB, 4, 1, 2, 3, 0},  {PixelFormat::xBGR, 4, 3, 2, 1, 0}};
  for (const L& l : layouts) {
    if (l.f != fmt) continue;
    const int stride = w * l.bpp + pad;
    p.data[0].assign(size_t(stride) * size_t(h), 0xAB);  // padding holds garbage
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        uint8_t* d = &p.data[0][size_t(y) * size_t(stride) + size_t(x) * size_t(l.bpp)];
        d[l.r] = px(x, y, 0);
        d[l.g] = px(x, y, 1);
        d[l.b] = px(x, y, 2);
        if (l.a >= 0) d[l.a] = 0x5A;
      }
    p.view.planes[0] = p.data[0].data();
    p.view.strides[0] = stride;
    return p;
  }
  // I420 / NV12, BT.601 full range (as JPEG decoders produce), chroma averaged over 2x2.
  const int cw = (w + 1) / 2, ch = (h + 1) / 2;
  const int ys = w + pad;
  p.data[0].assign(size_t(ys) * size_t(h), 0xAB);
  std::vector<float> u(size_t(cw) * size_t(ch)), v(u.size()), n(u.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float r = px(x, y, 0), g = px(x, y, 1), b = px(x, y, 2);
      const float yy = 0.299f * r + 0.587f * g + 0.114f * b;
      p.data[0][size_t(y) * size_t(ys) + size_t(x)] = uint8_t(std::clamp(int(yy + 0.5f), 0, 255));
      const size_t ci = size_t(y / 2) * size_t(cw) + size_t(x / 2);
      u[ci] += (b - yy) / 1.772f + 128.f;
      v[ci] += (r - yy) / 1.402f + 128.f;
      n[ci] += 1;
    }
  auto q = [](float s, float cnt) { return uint8_t(std::clamp(int(s / cnt + 0.5f), 0, 255)); };
  p.view.planes[0] = p.data[0].data();
  p.view.strides[0] = ys;
  p.view.full_range = true;
  if (fmt == PixelFormat::I420) {
    const int cs = cw + pad;
    for (int k = 1; k <= 2; ++k) p.data[k].assign(size_t(cs) * size_t(ch), 0xAB);
    for (int y = 0; y < ch; ++y)
      for (int x = 0; x < cw; ++x) {
        const size_t ci = size_t(y) * size_t(cw) + size_t(x);
        p.data[1][size_t(y) * size_t(cs) + size_t(x)] = q(u[ci], n[ci]);
        p.data[2][size_t(y) * size_t(cs) + size_t(x)] = q(v[ci], n[ci]);
      }
    for (int k = 1; k <= 2; ++k) {
      p.view.planes[k] = p.data[k].data();
      p.view.strides[k] = cs;
    }
  } else {
    const int cs = cw * 2 + pad;
    p.data[1].assign(size_t(cs) * size_t(ch), 0xAB);
    for (int y = 0; y < ch; ++y)
      for (int x = 0; x < cw; ++x) {
        const size_t ci = size_t(y) * size_t(cw) + size_t(x);
        p.data[1][size_t(y) * size_t(cs) + size_t(x) * 2] = q(u[ci], n[ci]);
        p.data[1][size_t(y) * size_t(cs) + size_t(x) * 2 + 1] = q(v[ci], n[ci]);
      }
    p.view.planes[1] = p.data[1].data();
    p.view.strides[1] = cs;
  }
  return p;
}

const PixelFormat kPacked[] = {PixelFormat::RGB,  PixelFormat::BGR,  PixelFormat::RGBA, PixelFormat::BGRx,
                               PixelFormat::xRGB, PixelFormat::ABGR, PixelFormat::RGBx, PixelFormat::BGRA,
                               PixelFormat::ARGB, PixelFormat::xBGR};

// Both pass orders Pillow has used, each against its own references; the
// fixtures hold at least one frame where the two differ.
TEST(Preprocess, PackedFormatsMatchTorchvisionExactly) {
  size_t checked = 0, orders_differ = 0;
  const std::pair<PassOrder, const char*> orders[] = {{PassOrder::Pillow13, "pillow13"},
                                                      {PassOrder::Pillow12, "pillow12"}};
  for (const auto& e : manifest()["preprocess"]) {
    const int w = e["width"], h = e["height"];
    const std::string img = e["image"];
    const auto rgb = read_bytes(img);
    ASSERT_EQ(rgb.size(), size_t(w) * size_t(h) * 3);
    const std::string stem = img.substr(0, img.size() - 4);
    for (auto it = e["outputs"].begin(); it != e["outputs"].end(); ++it) {
      const std::string base = stem + "." + it.key() + ".";
      orders_differ += read_bytes(base + "pillow13.u8") != read_bytes(base + "pillow12.u8");
      for (const auto& [order, order_name] : orders) {
        PreprocessConfig c = config_named(it.key());
        c.pass_order = order;
        const auto want_u8 = read_bytes(base + order_name + ".u8");
        at::Tensor want = read_f32(base + order_name + ".f32", {3, c.crop_height, c.crop_width});
        Preprocessor p(c);
        for (PixelFormat f : kPacked)
          for (bool vector : {true, false}) {  // the vector kernels (where the CPU has them) and the plain loops
            p.set_vector_kernels(vector);
            Packed pk = pack(rgb, w, h, f, f == PixelFormat::RGB ? 0 : 13);
            std::vector<uint8_t> u8(want_u8.size());
            p.run_u8(pk.view, u8.data());
            size_t diff = 0;
            for (size_t i = 0; i < u8.size(); ++i) diff += u8[i] != want_u8[i];
            EXPECT_EQ(diff, 0u) << stem << " " << it.key() << " " << order_name << " format " << int(f)
                                << (p.vector_kernels() ? " vector" : " plain") << ": pixels differing from PIL";
            at::Tensor got = at::empty({3, c.crop_height, c.crop_width});
            p.run(pk.view, got.data_ptr<float>());
            EXPECT_LE((got - want).abs().max().item<double>(), 1e-6) << stem << " " << it.key() << " " << order_name;
            ++checked;
          }
      }
    }
  }
  EXPECT_GT(checked, 400u);
  EXPECT_GT(orders_differ, 0u) << "no fixture frame where Pillow 12's and 13's pass orders differ";
}

TEST(Preprocess, YuvInputWithinTolerance) {
  double worst_mean = 0, worst_max = 0;
  for (const auto& e : manifest()["preprocess"]) {
    const int w = e["width"], h = e["height"];
    const std::string img = e["image"];
    const std::string stem = img.substr(0, img.size() - 4);
    const auto rgb = read_bytes(img);
    PreprocessConfig c;
    at::Tensor want = read_f32(stem + ".bilinear_256_224.pillow13.f32", {3, 224, 224});
    const double range = (want.max() - want.min()).item<double>();
    Preprocessor p(c);
    for (PixelFormat f : {PixelFormat::I420, PixelFormat::NV12}) {
      Packed pk = pack(rgb, w, h, f, 7);
      at::Tensor got = at::empty({3, 224, 224});
      p.run(pk.view, got.data_ptr<float>());
      const double mean = (got - want).abs().mean().item<double>() / range;
      worst_mean = std::max(worst_mean, mean);
      worst_max = std::max(worst_max, (got - want).abs().max().item<double>());
      // The documented tolerance holds for frames at least as large as the
      // model input. A 97x61 frame is enlarged 4x: its 49x31 chroma grid
      // cannot carry the source's colour edges, so it gets a looser bound.
      const double tolerance = std::min(w, h) >= 224 ? 0.01 : 0.02;
      EXPECT_LE(mean, tolerance) << stem << " " << (f == PixelFormat::I420 ? "I420" : "NV12");
      std::printf("[ yuv ] %-22s %s mean |diff| %.4f of the range\n", stem.c_str(), f == PixelFormat::I420 ? "I420" : "NV12", mean);
    }
  }
  std::printf("[ yuv ] worst mean |diff| %.4f of the range, worst max |diff| %.3f (4:2:0 chroma loss)\n",
              worst_mean, worst_max);
}

TEST(Preprocess, GrayIsRgbWithEqualChannels) {
  const auto& e = manifest()["preprocess"][1];
  const int w = e["width"], h = e["height"];
  auto rgb = read_bytes(e["image"]);
  std::vector<uint8_t> gray(size_t(w) * size_t(h));
  for (size_t i = 0; i < gray.size(); ++i) rgb[i * 3 + 1] = rgb[i * 3 + 2] = gray[i] = rgb[i * 3];
  FrameView g;
  g.format = PixelFormat::GRAY8;
  g.width = w;
  g.height = h;
  g.planes[0] = gray.data();
  g.strides[0] = w;
  Preprocessor p(PreprocessConfig{});
  std::vector<uint8_t> a(224 * 224 * 3), b(a.size());
  p.run_u8(g, a.data());
  p.run_u8(pack(rgb, w, h, PixelFormat::RGB, 0).view, b.data());
  EXPECT_EQ(a, b);
}

TEST(Preprocess, LetterboxPadsAndCentres) {
  const auto& e = manifest()["preprocess"][0];  // 1280x720
  const int w = e["width"], h = e["height"];
  const auto rgb = read_bytes(e["image"]);
  PreprocessConfig lb;
  lb.mode = ResizeMode::Letterbox;
  lb.pad_value = 7;
  Geometry g = compute_geometry(lb, w, h);
  EXPECT_EQ(g.resized_width, 224);
  EXPECT_EQ(g.resized_height, 126);
  EXPECT_EQ(g.place_top, 49);
  std::vector<uint8_t> out(224 * 224 * 3);
  Preprocessor(lb).run_u8(pack(rgb, w, h, PixelFormat::RGB, 0).view, out.data());
  PreprocessConfig st;
  st.mode = ResizeMode::Stretch;
  st.crop_width = 224;
  st.crop_height = 126;
  std::vector<uint8_t> inner(224 * 126 * 3);
  Preprocessor(st).run_u8(pack(rgb, w, h, PixelFormat::RGB, 0).view, inner.data());
  EXPECT_TRUE(std::equal(inner.begin(), inner.end(), out.begin() + 49 * 224 * 3));
  EXPECT_EQ(out[0], 7);
  EXPECT_EQ(out.back(), 7);
}

TEST(Preprocess, BgrOutputSwapsPlanes) {
  const auto& e = manifest()["preprocess"][0];
  const auto rgb = read_bytes(e["image"]);
  Packed pk = pack(rgb, e["width"], e["height"], PixelFormat::RGB, 0);
  PreprocessConfig c;
  c.mean = {0.f, 0.f, 0.f};
  c.std = {1.f, 1.f, 1.f};
  at::Tensor a = at::empty({3, 224, 224}), b = at::empty({3, 224, 224});
  Preprocessor(c).run(pk.view, a.data_ptr<float>());
  c.bgr = true;
  Preprocessor(c).run(pk.view, b.data_ptr<float>());
  EXPECT_TRUE(a.flip(0).equal(b));
}

TEST(Preprocess, BadFramesAndConfigsAreRefused) {
  Preprocessor p(PreprocessConfig{});
  std::vector<uint8_t> buf(64 * 64 * 4), out(224 * 224 * 3);
  FrameView f;
  f.format = PixelFormat::RGBA;
  f.width = 64;
  f.height = 64;
  f.planes[0] = buf.data();
  f.strides[0] = 64 * 4;
  EXPECT_NO_THROW(p.run_u8(f, out.data()));
  FrameView bad = f;
  bad.strides[0] = 64 * 3;
  EXPECT_THROW(p.run_u8(bad, out.data()), std::invalid_argument);
  bad = f;
  bad.width = 0;
  EXPECT_THROW(p.run_u8(bad, out.data()), std::invalid_argument);
  bad = f;
  bad.height = 1 << 20;
  EXPECT_THROW(p.run_u8(bad, out.data()), std::invalid_argument);
  bad = f;
  bad.planes[0] = nullptr;
  EXPECT_THROW(p.run_u8(bad, out.data()), std::invalid_argument);
  bad = f;
  bad.format = PixelFormat::I420;
  EXPECT_THROW(p.run_u8(bad, out.data()), std::invalid_argument);
  PreprocessConfig c;
  c.std = {0.f, 1.f, 1.f};
  EXPECT_THROW(Preprocessor{c}, std::invalid_argument);
  c = PreprocessConfig{};
  c.crop_width = 0;
  EXPECT_THROW(Preprocessor{c}, std::invalid_argument);
}

TEST(Preprocess, TinyFramesAreUpscaled) {
  // A 1x1 and a 3x2 frame still give a full crop (Resize enlarges them).
  Preprocessor p(PreprocessConfig{});
  std::vector<uint8_t> px{10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30}, out(224 * 224 * 3);
  for (auto [w, h] : {std::pair{1, 1}, std::pair{3, 2}}) {
    FrameView f;
    f.width = w;
    f.height = h;
    f.planes[0] = px.data();
    f.strides[0] = w * 3;
    p.run_u8(f, out.data());
    EXPECT_EQ(out[0], 10);
    EXPECT_EQ(out[224 * 224 * 3 - 1], 30);
  }
}

// The vector kernels against the plain loops on random frames: every
// input format, odd sizes (1 pixel up to 700, shrinks up to 40x, strips),
// both filters (bicubic's negative lobes over saturated pixels exercise the
// clipping), every resize mode and pass order, crops of frames starting at
// any byte (crop_view), rows padded or not. Frames are allocated at their
// exact size, so a read past a row's last pixel lands outside the buffer
// (caught under AddressSanitizer or valgrind).
TEST(Preprocess, VectorKernelsGiveThePlainLoopsBytes) {
  if (!simd::available()) GTEST_SKIP() << "this CPU has no AVX2: the vector kernels are not used on it";
  // Each set of kernels this CPU runs (AVX2; AVX-512 VBMI/VNNI, whose quads
  // fall back to AVX2's pairs near a row's end or past 30-pixel spans, and
  // whose vertical pass leaves AVX2 a last 16 bytes).
  std::vector<simd::Kernels> kernels{simd::Kernels::Avx2};
  if (simd::best_kernels() == simd::Kernels::Avx512) kernels.push_back(simd::Kernels::Avx512);
  else std::printf("[ vector ] this CPU has no AVX-512 VBMI/VNNI: its kernels are not tested here\n");
  std::mt19937 rng(20261204);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const PixelFormat formats[] = {PixelFormat::RGB,  PixelFormat::BGR,  PixelFormat::RGBA, PixelFormat::BGRx,
                                 PixelFormat::xRGB, PixelFormat::ABGR, PixelFormat::RGBx, PixelFormat::BGRA,
                                 PixelFormat::ARGB, PixelFormat::xBGR, PixelFormat::GRAY8, PixelFormat::I420,
                                 PixelFormat::NV12};
  size_t cases = 0, vertical_first = 0, padded = 0, bytes = 0;
  for (int n = 0; n < 600; ++n) {
    const PixelFormat fmt = formats[size_t(n) % std::size(formats)];
    int w = uniform(1, 700), h = uniform(1, 700);
    if (n % 7 == 0) w = uniform(1, 8);  // strips
    if (n % 11 == 0) h = uniform(1, 8);
    // Mostly noise, with runs of 0 and 255 (bicubic overshoots there).
    std::vector<uint8_t> rgb(size_t(w) * size_t(h) * 3);
    for (auto& v : rgb) {
      const int r = uniform(0, 9);
      v = uint8_t(r == 0 ? 0 : r == 1 ? 255 : uniform(0, 255));
    }
    Packed pk = pack(rgb, w, h, fmt, uniform(0, 1) ? 0 : uniform(1, 9));
    // Exactly sized planes: nothing readable after the last row's pixels.
    for (auto& plane : pk.data)
      if (!plane.empty()) plane.shrink_to_fit();
    FrameView view = pk.view;
    if (n % 3 == 0) {
      Region r{uniform(0, w - 1), uniform(0, h - 1), uniform(1, w), uniform(1, h)};
      view = crop_view(pk.view, r);
      if (view.width == 0) continue;
    }
    PreprocessConfig c;
    c.filter = uniform(0, 1) ? Filter::Bilinear : Filter::Bicubic;
    c.mode = ResizeMode(uniform(0, 2));
    c.pass_order = uniform(0, 3) ? PassOrder::Pillow13 : PassOrder::Pillow12;
    c.crop_width = uniform(1, 300);
    c.crop_height = uniform(0, 3) ? c.crop_width : uniform(1, 300);
    c.resize_size = uniform(1, 400);
    c.pad_value = uint8_t(uniform(0, 255));
    Preprocessor plain(c);
    plain.set_vector_kernels(false);
    ASSERT_FALSE(plain.vector_kernels());
    const size_t size = size_t(c.crop_width) * size_t(c.crop_height) * 3;
    std::vector<uint8_t> b(size, 2);
    plain.run_u8(view, b.data());
    const ResamplePlan p = plain.plan(view);
    for (const simd::Kernels k : kernels) {
      Preprocessor vec(c);
      vec.set_kernels(k);
      ASSERT_EQ(vec.kernels(), k);
      std::vector<uint8_t> a(size, 1);
      vec.run_u8(view, a.data());
      size_t diff = 0;
      for (size_t i = 0; i < size; ++i) diff += a[i] != b[i];
      ASSERT_EQ(diff, 0u) << simd::kernels_name(k) << ", case " << n << ": " << view.width << "x" << view.height
                          << " format " << int(fmt) << " mode " << int(c.mode)
                          << (c.filter == Filter::Bicubic ? " bicubic" : " bilinear") << " resize " << c.resize_size
                          << " crop " << c.crop_width << "x" << c.crop_height
                          << (p.vertical_first ? " vertical first" : " horizontal first");
      // Twice more on the same Preprocessor (its cached plan), as a stream does.
      vec.run_u8(view, a.data());
      ASSERT_EQ(a, b) << simd::kernels_name(k) << ", case " << n << ", second frame";
    }
    ++cases;
    vertical_first += p.vertical_first;
    padded += p.rx1 - p.rx0 < c.crop_width || p.ry1 - p.ry0 < c.crop_height;
    bytes += size;
  }
  std::printf("[ vector ] %zu cases (%zu vertical pass first, %zu padded), %zu output bytes, all equal (%s%s)\n",
              cases, vertical_first, padded, bytes, simd::kernels_name(kernels.front()),
              kernels.size() > 1 ? ", AVX-512 VBMI/VNNI" : "");
  EXPECT_GT(cases, 500u);
  EXPECT_GT(vertical_first, 50u);
  EXPECT_GT(padded, 50u);
}

// Rows split across an OpenMP team (ptminfer's model threads) against one
// thread: the same bytes and floats for every format, both pass orders,
// crops and team sizes, and with frames of another size in between (the
// per-thread scratch rows resized).
TEST(Preprocess, ThreadsGiveOneThreadsBytes) {
  std::mt19937 rng(20261207);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const PixelFormat formats[] = {PixelFormat::RGB, PixelFormat::BGRx, PixelFormat::RGBA, PixelFormat::GRAY8,
                                 PixelFormat::I420, PixelFormat::NV12};
  size_t cases = 0, vertical_first = 0;
  std::map<int, Preprocessor> teams;
  for (int n = 0; n < 120; ++n) {
    const PixelFormat fmt = formats[size_t(n) % std::size(formats)];
    int w = uniform(32, 900), h = uniform(32, 900);
    if (n % 4 == 1) {  // tall: Pillow's vertical pass first
      w = uniform(260, 400);
      h = uniform(2 * w + 10, 900);
    }
    std::vector<uint8_t> rgb(size_t(w) * size_t(h) * 3);
    for (auto& v : rgb) v = uint8_t(uniform(0, 255));
    Packed pk = pack(rgb, w, h, fmt, uniform(0, 1) ? 0 : uniform(1, 9));
    FrameView view = pk.view;
    if (n % 3 == 0) {
      view = crop_view(pk.view, Region{uniform(0, w / 2), uniform(0, h / 2), uniform(w / 4, w), uniform(h / 4, h)});
      if (view.width == 0) continue;
    }
    PreprocessConfig c;
    c.crop_width = c.crop_height = 224;
    c.resize_size = n % 4 == 0 ? 224 : 256;
    c.filter = n % 5 == 0 ? Filter::Bicubic : Filter::Bilinear;
    Preprocessor one(c);
    ASSERT_EQ(one.threads(), 1);
    const size_t plane = size_t(c.crop_width) * size_t(c.crop_height);
    std::vector<float> a(plane * 3, -1.f), b(plane * 3, -2.f);
    one.run(view, a.data());
    std::vector<uint8_t> ua(plane * 3, 1), ub(plane * 3, 2);
    one.run_u8(view, ua.data());
    // Teams of 2, 3 and 4 threads, each Preprocessor kept across frames of
    // every size (a stream whose caps change).
    const int threads = 2 + n % 3;
    const int key = threads * 4 + (c.filter == Filter::Bicubic) * 2 + (c.resize_size == 224);
    Preprocessor& team = teams.emplace(key, Preprocessor(c)).first->second;
    team.set_threads(threads);
    ASSERT_EQ(team.threads(), threads);
    team.run(view, b.data());
    team.run_u8(view, ub.data());
    ASSERT_EQ(ua, ub) << "case " << n << ": " << view.width << "x" << view.height << " format " << int(fmt) << ", "
                      << threads << " threads";
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
        << "case " << n << ": " << view.width << "x" << view.height << " format " << int(fmt) << ", " << threads
        << " threads";
    ++cases;
    vertical_first += one.plan(view).vertical_first;
  }
  std::printf("[ threads ] %zu cases (%zu vertical pass first) on teams of 2-4 threads, all equal\n", cases,
              vertical_first);
  EXPECT_GT(cases, 100u);
  EXPECT_GT(vertical_first, 10u);
}

}  // namespace

void register_dynamic_tests() {}

}  // namespace ptm::test
