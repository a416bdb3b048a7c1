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
  PackedLayout l;
  if (packed_layout(f, &l)) return {l.bpp, l.r, l.g, l.b};
  return {1, -1, -1, -1};
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

namespace {

struct Placement {
  std::vector<std::string> lines;
  std::vector<float> bars;  // < 0: no bar on that line
  int font = cv::FONT_HERSHEY_SIMPLEX;
  double scale = 1;
  int thickness = 1, base = 0, line_h = 0, bar_w = 0, pad = 6;
  cv::Rect box;
};

// What to draw and where, for a frame of w x h; false when nothing.
bool place(int w, int h, const OverlayText& text, const OverlayStyle& st, Placement* p) {
  size_t n = text.items.size();
  if (st.max_results) n = std::min<size_t>(n, st.max_results);
  for (size_t i = 0; i < n; ++i) {
    char buf[64] = "";
    if (st.show_scores) std::snprintf(buf, sizeof buf, " %5.1f%%", 100.0 * text.items[i].score);
    p->lines.push_back(text.items[i].label + buf);
    p->bars.push_back(std::clamp(text.items[i].score, 0.f, 1.f));
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
    p->lines.push_back(t);
    p->bars.push_back(-1);
  }
  if (p->lines.empty() || w <= 0 || h <= 0) return false;
  p->scale = std::max(0.1, st.font_scale);
  p->thickness = std::max(1, int(p->scale * 2 + 0.5));
  int width = 0;
  p->line_h = cv::getTextSize("Ag", p->font, p->scale, p->thickness, &p->base).height + p->base + 6;
  for (const auto& s : p->lines)
    width = std::max(width, cv::getTextSize(s, p->font, p->scale, p->thickness, &p->base).width);
  p->bar_w = st.show_bars ? std::max(20, int(60 * p->scale)) : 0;
  const int box_w = std::min(w, width + p->bar_w + 3 * p->pad);
  const int box_h = std::min(h, int(p->lines.size()) * p->line_h + p->pad);
  const bool right = st.corner == Corner::TopRight || st.corner == Corner::BottomRight;
  const bool bottom = st.corner == Corner::BottomLeft || st.corner == Corner::BottomRight;
  p->box = cv::Rect(right ? w - box_w : 0, bottom ? h - box_h : 0, box_w, box_h);
  return true;
}

// Bars and text, with the box's top-left corner at `origin` in `img`.
void draw_lines(cv::Mat& img, const Placement& p, cv::Point origin, const cv::Scalar& tc, const cv::Scalar& bc,
                bool show_bars) {
  for (size_t i = 0; i < p.lines.size(); ++i) {
    const int y = origin.y + p.pad + int(i) * p.line_h;
    int tx = origin.x + p.pad;
    if (show_bars && p.bars[i] >= 0) {
      const int h = p.line_h - 8;
      cv::rectangle(img, cv::Rect(tx, y + 2, p.bar_w, h), tc, 1);
      cv::rectangle(img, cv::Rect(tx, y + 2, std::max(1, int(p.bar_w * p.bars[i])), h), bc, cv::FILLED);
    }
    if (show_bars) tx += p.bar_w + p.pad;
    cv::putText(img, p.lines[i], cv::Point(tx, y + p.line_h - p.base - 4), p.font, p.scale, tc, p.thickness,
                cv::LINE_AA);
  }
}

// roi = a x colour + (1 - a) x roi. The fill comes from a buffer each
// streaming thread keeps, grown to the largest box it has drawn, so a
// frame in steady state allocates nothing.
void blend_fill(cv::Mat roi, const cv::Scalar& colour, double a) {
  thread_local cv::Mat scratch;
  if (scratch.type() != roi.type() || scratch.rows < roi.rows || scratch.cols < roi.cols)
    scratch.create(std::max(scratch.rows, roi.rows), std::max(scratch.cols, roi.cols), roi.type());
  cv::Mat fill = scratch(cv::Rect(0, 0, roi.cols, roi.rows));
  fill.setTo(colour);
  cv::addWeighted(fill, a, roi, 1 - a, 0, roi);
}

cv::Scalar rgba(uint32_t argb, double alpha) {
  return cv::Scalar((argb >> 16) & 0xFF, (argb >> 8) & 0xFF, argb & 0xFF, alpha);
}

}  // namespace

void draw_overlay(const MutableFrame& f, const OverlayText& text, const OverlayStyle& st) {
  if (f.width <= 0 || f.height <= 0 || !f.planes[0]) return;
  Placement p;
  if (!place(f.width, f.height, text, st, &p)) return;
  const Layout l = layout_of(f.format);
  cv::Mat img(f.height, f.width, CV_8UC(l.channels), f.planes[0], size_t(f.strides[0]));
  if (alpha_of(st.box_color) > 0) blend_fill(img(p.box), colour(st.box_color, l), alpha_of(st.box_color));
  draw_lines(img, p, p.box.tl(), colour(st.text_color, l), colour(st.bar_color, l), st.show_bars);
}

void draw_regions(const MutableFrame& f, const std::vector<OverlayRegion>& regions, const OverlayStyle& st) {
  if (f.width <= 0 || f.height <= 0 || !f.planes[0]) return;
  const Layout l = layout_of(f.format);
  cv::Mat img(f.height, f.width, CV_8UC(l.channels), f.planes[0], size_t(f.strides[0]));
  const cv::Rect frame(0, 0, f.width, f.height);
  const double scale = std::max(0.1, st.font_scale);
  const int thickness = std::max(1, int(scale * 2 + 0.5));
  for (const OverlayRegion& r : regions) {
    const cv::Rect box = cv::Rect(r.x, r.y, r.width, r.height) & frame;
    if (box.empty()) continue;
    cv::rectangle(img, box, colour(st.bar_color, l), thickness);
    if (r.label.empty()) continue;
    char buf[32] = "";
    if (st.show_scores) std::snprintf(buf, sizeof buf, " %.0f%%", 100.0 * r.score);
    const std::string text = r.label + buf;
    int base = 0;
    const cv::Size size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, scale, thickness, &base);
    const int th = size.height + base + 4;
    const int ty = box.y >= th ? box.y - th : box.y;  // above the box, or inside at the top edge
    const cv::Rect label = cv::Rect(box.x, ty, size.width + 6, th) & frame;
    if (label.empty()) continue;
    if (alpha_of(st.box_color) > 0) blend_fill(img(label), colour(st.box_color, l), alpha_of(st.box_color));
    cv::putText(img, text, cv::Point(label.x + 3, label.y + size.height + 2), cv::FONT_HERSHEY_SIMPLEX, scale,
                colour(st.text_color, l), thickness, cv::LINE_AA);
  }
}

bool render_overlay_patch(int width, int height, const OverlayText& text, const OverlayStyle& st, OverlayPatch* out) {
  Placement p;
  if (!place(width, height, text, st, &p)) return false;
  out->x = p.box.x;
  out->y = p.box.y;
  out->width = p.box.width;
  out->height = p.box.height;
  out->rgba.assign(size_t(out->width) * size_t(out->height) * 4, 0);
  cv::Mat img(out->height, out->width, CV_8UC4, out->rgba.data());
  if (alpha_of(st.box_color) > 0) img.setTo(rgba(st.box_color, 255.0 * alpha_of(st.box_color)));
  draw_lines(img, p, cv::Point(0, 0), rgba(st.text_color, 255), rgba(st.bar_color, 255), st.show_bars);
  return true;
}

}  // namespace ptm
