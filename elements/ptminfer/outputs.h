// ptminfer's outputs behind one seam: each publishes a classified frame's
// result one way (buffer meta, bus message, JSON lines, GstAnalytics). The
// element builds the list at start and calls every output per frame.
#pragma once

#include <gst/gst.h>

#include <memory>
#include <string>
#include <vector>

#include "infer_core.h"
#include "publisher.h"

namespace ptm {

struct Published {
  GstElement* element;
  GstBuffer* buffer;  // writable
  const FrameResult& result;  // the whole frame's (no classes when regions were classified)
  const std::string& model;   // the architecture's name
  bool post_messages;         // the live "post-messages" property
  // Regions classified instead of the whole frame (inference-region=roi-list), else nullptr.
  const std::vector<RegionResult>* regions = nullptr;
  const std::string* stream = nullptr;  // the stream-id of the stream the buffer belongs to
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
  // JSON documents through a publisher (MQTT, file, stdout): to the topic
  // template's expansion ({element}, {stream}, {model}), one per frame or
  // one per classified region.
  std::shared_ptr<Publisher> publisher;
  std::string topic;
  bool publish_regions = false;
};

// The topic for a document: `{element}`, `{stream}` and `{model}` in the
// template replaced, with MQTT's wildcards and level separator in the
// values made '_'.
std::string expand_topic(const std::string& tmpl, const DocumentSource& src);

// Whether this build writes GstAnalytics metadata.
bool have_analytics();

// The outputs for these options, in the order they publish; throws
// std::runtime_error (e.g. a results file that cannot be opened).
std::vector<std::unique_ptr<ResultOutput>> make_outputs(const OutputOptions& o);

}  // namespace ptm
