// ptmoverlay's GStreamer-free core: draws classification results (labels,
// scores, score bars, timing) onto a frame in place with OpenCV.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "preprocess_core.h"

namespace ptm {

enum class Corner { TopLeft, TopRight, BottomLeft, BottomRight };

struct OverlayStyle {
  Corner corner = Corner::TopLeft;
  double font_scale = 0.6;
  uint32_t text_color = 0xFFFFFFFF;  // ARGB
  uint32_t bar_color = 0xFF30C030;   // ARGB
  uint32_t box_color = 0xA0000000;   // ARGB; alpha 0 = no box
  bool show_scores = true;
  bool show_bars = true;
  bool show_timing = false;
  unsigned max_results = 0;  // 0 = every result on the frame
};

struct OverlayItem {
  std::string label;
  float score;
};

struct OverlayText {
  std::vector<OverlayItem> items;
  double inference_ms = -1;  // < 0: unknown
  double fps = -1;
  std::string model;
};

// A writable frame: the same layouts as FrameView.
struct MutableFrame {
  PixelFormat format = PixelFormat::RGB;
  int width = 0, height = 0;
  uint8_t* planes[3] = {nullptr, nullptr, nullptr};
  int strides[3] = {0, 0, 0};
};

// Colour formats get coloured text and bars; YUV and grey frames get them in
// luma only (chroma untouched).
void draw_overlay(const MutableFrame& frame, const OverlayText& text, const OverlayStyle& style);

// A classified region of the frame (ptminfer inference-region=roi-list).
struct OverlayRegion {
  int x = 0, y = 0, width = 0, height = 0;
  std::string label;  // its best class; "" draws the outline only
  float score = 0;
};

// Each region's outline (bar colour) and its label with the score on a box
// above its top-left corner (inside when the region touches the top edge);
// the same formats and colours as draw_overlay.
void draw_regions(const MutableFrame& frame, const std::vector<OverlayRegion>& regions, const OverlayStyle& style);

// The same drawing as an RGBA image of the box alone (alpha: the box's
// opacity, opaque text and bars), and where it goes on a frame of
// width x height; for frames in GPU memory, which blend it in place.
struct OverlayPatch {
  int x = 0, y = 0, width = 0, height = 0;
  std::vector<uint8_t> rgba;
};
bool render_overlay_patch(int width, int height, const OverlayText& text, const OverlayStyle& style,
                          OverlayPatch* out);

}  // namespace ptm
