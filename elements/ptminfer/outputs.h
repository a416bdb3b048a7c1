// ptminfer's outputs behind one seam: each publishes a classified frame's
// result one way (buffer meta, bus message, JSON lines, GstAnalytics). The
// element builds the list at start and calls every output per frame.
#pragma once

#include <gst/gst.h>

#include <memory>
#include <string>
#include <vector>

#include "infer_core.h"

namespace ptm {

struct Published {
  GstElement* element;
  GstBuffer* buffer;  // writable
  const FrameResult& result;  // the whole frame's (no classes when regions were classified)
  const std::string& model;   // the architecture's name
  bool post_messages;         // the live "post-messages" property
  // Regions classified instead of the whole frame (inference-region=roi-list), else nullptr.
  const std::vector<RegionResult>* regions = nullptr;
};

class ResultOutput {
 public:
  virtual ~ResultOutput() = default;
  // Throws std::exception when the result cannot be published.
  virtual void publish(const Published& p) = 0;
  // The element error's message when publish() throws.
  virtual const char* failure() const { return "Could not publish results"; }
};

struct OutputOptions {
  std::string results_file;  // JSON lines; empty: none
  bool analytics = false;    // GstAnalytics relation meta (GStreamer >= 1.24 builds)
};

// Whether this build writes GstAnalytics metadata.
bool have_analytics();

// The outputs for these options, in the order they publish; throws
// std::runtime_error (e.g. a results file that cannot be opened).
std::vector<std::unique_ptr<ResultOutput>> make_outputs(const OutputOptions& o);

}  // namespace ptm
