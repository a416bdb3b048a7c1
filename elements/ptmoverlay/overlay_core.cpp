#include "overlay_core.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>

namespace ptm {

namespace {

struct Layout {
  int channels, r, g, b;  // channel indices; r < 0: single-channel (luma)
};

Layout layout_of(PixelFormat f) {
  switch (f) {
    case PixelFormat::RGB: return {3, 0, 1, 2};
    case PixelFormat::BGR: return {3, 2, 1, 0};
    case PixelFormat::RGBA: case PixelFormat::RGBx: return {4, 0, 1, 2};
    case PixelFormat::BGRA: case PixelFormat::BGRx: return {4, 2, 1, 0};
    case PixelFormat::ARGB: case PixelFormat::xRGB: return {4, 1, 2, 3};
    case PixelFormat::ABGR: case PixelFormat::xBGR: return {4, 3, 2, 1};
    default: return {1, -1, -1, -1};
  }
}

cv::Scalar colour(uint32_t argb, const Layout& l) {
  const double r = (argb >> 16) & 0xFF, g = (argb >> 8) & 0xFF, b = argb & 0xFF;
  if (l.r < 0) return cv::Scalar(0.299 * r + 0.587 * g + 0.114 * b);
  cv::Scalar s(0, 0, 0, 255);
  s[l.r] = r;
  s[l.g] = g;
  s[l.b] = b;
  return s;
}

double alpha_of(uint32_t argb) { return ((argb >> 24) & 0xFF) / 255.0; }

}  // namespace

void draw_overlay(const MutableFrame& f, const OverlayText& text, const OverlayStyle& st) {
  if (f.width <= 0 || f.height <= 0 || !f.planes[0]) return;
  const Layout l = layout_of(f.format);
  cv::Mat img(f.height, f.width, CV_8UC(l.channels), f.planes[0], size_t(f.strides[0]));

  std::vector<std::string> lines;
  std::vector<float> bars;
  size_t n = text.items.size();
  if (st.max_results) n = std::min<size_t>(n, st.max_results);
  for (size_t i = 0; i < n; ++i) {
    char buf[64] = "";
    if (st.show_scores) std::snprintf(buf, sizeof buf, " %5.1f%%", 100.0 * text.items[i].score);
    lines.push_back(text.items[i].label + buf);
    bars.push_back(std::clamp(text.items[i].score, 0.f, 1.f));
  }
  if (st.show_timing && (text.inference_ms >= 0 || text.fps >= 0)) {
    std::string t = text.model;
    char buf[48];
    if (text.inference_ms >= 0) {
      std::snprintf(buf, sizeof buf, " %.1f ms", text.inference_ms);
      t += buf;
    }
    if (text.fps > 0) {
      std::snprintf(buf, sizeof buf, " %.1f fps", text.fps);
      t += buf;
    }
    lines.push_back(t);
    bars.push_back(-1);
  }
  if (lines.empty()) return;

  const int font = cv::FONT_HERSHEY_SIMPLEX;
  const double scale = std::max(0.1, st.font_scale);
  const int thickness = std::max(1, int(scale * 2 + 0.5));
  int base = 0, width = 0;
  const int line_h = cv::getTextSize("Ag", font, scale, thickness, &base).height + base + 6;
  for (const auto& s : lines) width = std::max(width, cv::getTextSize(s, font, scale, thickness, &base).width);
  const int bar_w = st.show_bars ? std::max(20, int(60 * scale)) : 0;
  const int pad = 6;
  const int box_w = std::min(f.width, width + bar_w + 3 * pad), box_h = std::min(f.height, int(lines.size()) * line_h + pad);
  const bool right = st.corner == Corner::TopRight || st.corner == Corner::BottomRight;
  const bool bottom = st.corner == Corner::BottomLeft || st.corner == Corner::BottomRight;
  const int x0 = right ? f.width - box_w : 0, y0 = bottom ? f.height - box_h : 0;
  const cv::Rect box(x0, y0, box_w, box_h);

  if (alpha_of(st.box_color) > 0) {
    cv::Mat roi = img(box);
    cv::Mat fill(roi.size(), roi.type(), colour(st.box_color, l));
    cv::addWeighted(fill, alpha_of(st.box_color), roi, 1 - alpha_of(st.box_color), 0, roi);
  }
  const cv::Scalar tc = colour(st.text_color, l), bc = colour(st.bar_color, l);
  for (size_t i = 0; i < lines.size(); ++i) {
    const int y = y0 + pad + int(i) * line_h;
    int tx = x0 + pad;
    if (st.show_bars && bars[i] >= 0) {
      const int h = line_h - 8;
      cv::rectangle(img, cv::Rect(tx, y + 2, bar_w, h), tc, 1);
      cv::rectangle(img, cv::Rect(tx, y + 2, std::max(1, int(bar_w * bars[i])), h), bc, cv::FILLED);
    }
    if (st.show_bars) tx += bar_w + pad;
    cv::putText(img, lines[i], cv::Point(tx, y + line_h - base - 4), font, scale, tc, thickness, cv::LINE_AA);
  }
}

}  // namespace ptm
