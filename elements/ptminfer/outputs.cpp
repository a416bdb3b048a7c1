#include "outputs.h"

#include <cstring>
#include <stdexcept>

#include <gst/video/video.h>

#include "gst/ptm/ptmmeta.h"

#if PTM_HAVE_ANALYTICS
#include <gst/analytics/analytics.h>
#endif

namespace ptm {
namespace {

template <typename T, typename Set>
GValue value_array(const std::vector<T>& items, GType type, Set set) {
  GValue arr = G_VALUE_INIT;
  gst_value_array_init(&arr, guint(items.size()));
  for (const T& x : items) {
    GValue v = G_VALUE_INIT;
    g_value_init(&v, type);
    set(&v, x);
    gst_value_array_append_and_take_value(&arr, &v);
  }
  return arr;
}

// The classes of a result as three arrays: class-ids, labels, scores.
void set_classes(GstStructure* s, const FrameResult& r) {
  std::vector<int> ids;
  std::vector<float> scores;
  for (const Prediction& t : r.top) {
    ids.push_back(int(t.index));
    scores.push_back(t.score);
  }
  GValue v = value_array(ids, G_TYPE_INT, [](GValue* g, int x) { g_value_set_int(g, x); });
  gst_structure_take_value(s, "class-ids", &v);
  v = value_array(r.labels, G_TYPE_STRING, [](GValue* g, const std::string& x) { g_value_set_string(g, x.c_str()); });
  gst_structure_take_value(s, "labels", &v);
  v = value_array(scores, G_TYPE_FLOAT, [](GValue* g, float x) { g_value_set_float(g, x); });
  gst_structure_take_value(s, "scores", &v);
  gst_structure_set(s, "top-label", G_TYPE_STRING, r.top.empty() ? "" : r.labels[0].c_str(), "top-score",
                    G_TYPE_DOUBLE, r.top.empty() ? 0.0 : double(r.top[0].score), nullptr);
}

// GstPtmClassificationMeta on the buffer; with regions, a
// "ptm-classification" parameter on each region's
// GstVideoRegionOfInterestMeta (added for regions that came without one).
class MetaOutput : public ResultOutput {
 public:
  void publish(const Published& p) override {
    if (p.regions) {
      for (const RegionResult& g : *p.regions) {
        auto* roi = static_cast<GstVideoRegionOfInterestMeta*>(g.roi);
        if (!roi)
          roi = gst_buffer_add_video_region_of_interest_meta(p.buffer, g.type.empty() ? "object" : g.type.c_str(),
                                                             guint(g.box.x), guint(g.box.y), guint(g.box.width),
                                                             guint(g.box.height));
        GstStructure* s = gst_structure_new("ptm-classification", "model", G_TYPE_STRING, p.model.c_str(), "frame",
                                            G_TYPE_UINT64, g.result.frame, "reused", G_TYPE_BOOLEAN, g.result.reused,
                                            "track-id", G_TYPE_INT64, gint64(g.track_id), nullptr);
        set_classes(s, g.result);
        gst_video_region_of_interest_meta_add_param(roi, s);
      }
      return;
    }
    const FrameResult& r = p.result;
    std::vector<gint> ids;
    std::vector<gfloat> scores;
    std::vector<const gchar*> labels;
    for (size_t i = 0; i < r.top.size(); ++i) {
      ids.push_back(gint(r.top[i].index));
      scores.push_back(r.top[i].score);
      labels.push_back(r.labels[i].c_str());
    }
    gst_buffer_add_ptm_classification_meta(p.buffer, guint(ids.size()), ids.data(), scores.data(), labels.data(),
                                           p.model.c_str(), r.inference_ns, r.frame, r.reused);
  }
};

// The "ptm-classification" element message per frame, or a
// "ptm-region-classification" one per region.
class MessageOutput : public ResultOutput {
 public:
  void publish(const Published& p) override {
    if (!p.post_messages) return;
    if (p.regions) {
      for (const RegionResult& g : *p.regions) {
        GstStructure* s = gst_structure_new(
            "ptm-region-classification", "frame", G_TYPE_UINT64, g.result.frame, "pts", G_TYPE_UINT64,
            GST_BUFFER_PTS(p.buffer), "model", G_TYPE_STRING, p.model.c_str(), "inference-ns", G_TYPE_UINT64,
            g.result.inference_ns, "x", G_TYPE_INT, g.box.x, "y", G_TYPE_INT, g.box.y, "width", G_TYPE_INT,
            g.box.width, "height", G_TYPE_INT, g.box.height, "region-type", G_TYPE_STRING, g.type.c_str(), "reused",
            G_TYPE_BOOLEAN, g.result.reused, "track-id", G_TYPE_INT64, gint64(g.track_id), nullptr);
        set_classes(s, g.result);
        gst_element_post_message(p.element, gst_message_new_element(GST_OBJECT(p.element), s));
      }
      return;
    }
    const FrameResult& r = p.result;
    GstStructure* s = gst_structure_new(
        "ptm-classification", "frame", G_TYPE_UINT64, r.frame, "pts", G_TYPE_UINT64, GST_BUFFER_PTS(p.buffer), "model",
        G_TYPE_STRING, p.model.c_str(), "reused", G_TYPE_BOOLEAN, r.reused, "inference-ns", G_TYPE_UINT64,
        r.inference_ns, nullptr);
    set_classes(s, r);
    gst_element_post_message(p.element, gst_message_new_element(GST_OBJECT(p.element), s));
  }
};

// One JSON line per frame (ResultsFile).
class JsonLinesOutput : public ResultOutput {
 public:
  explicit JsonLinesOutput(const std::string& path) : file_(path) {}
  void publish(const Published& p) override {
    file_.write(GST_BUFFER_PTS_IS_VALID(p.buffer) ? int64_t(GST_BUFFER_PTS(p.buffer)) : -1, p.result, p.regions);
  }
  const char* failure() const override { return "Could not write results"; }

 private:
  ResultsFile file_;
};

// One JSON document per frame, or per classified region, to a publisher.
// Never waits: the publisher queues. While it drops documents (the
// destination away or too slow), one warning per outage says so.
class PublishOutput : public ResultOutput {
 public:
  PublishOutput(std::shared_ptr<Publisher> pub, std::string topic, bool per_region)
      : pub_(std::move(pub)), topic_(std::move(topic)), per_region_(per_region) {}

  void publish(const Published& p) override {
    DocumentSource src{GST_OBJECT_NAME(p.element), p.stream ? *p.stream : std::string(), p.model};
    const std::string topic = expand_topic(topic_, src);
    const int64_t pts = GST_BUFFER_PTS_IS_VALID(p.buffer) ? int64_t(GST_BUFFER_PTS(p.buffer)) : -1;
    if (per_region_ && p.regions) {
      for (size_t i = 0; i < p.regions->size(); ++i) pub_->offer(topic, region_document(pts, (*p.regions)[i], i, &src));
    } else if (!per_region_) {
      pub_->offer(topic, frame_document(pts, p.result, p.regions, &src));
    }
    report(p.element);
  }

 private:
  void report(GstElement* element) {
    const PublishStats s = pub_->stats();
    if (s.dropped > dropped_ && !warned_) {
      GST_ELEMENT_WARNING(element, RESOURCE, WRITE,
                          ("Results are being dropped: %s cannot take them (%s); %" G_GUINT64_FORMAT
                           " dropped so far, up to %" G_GUINT64_FORMAT " held",
                           pub_->describe().c_str(), s.last_error.empty() ? "too slow" : s.last_error.c_str(),
                           s.dropped, s.queued),
                          (nullptr));
      warned_ = true;
    }
    if (warned_ && s.connects > connects_ && s.connected) {
      GST_INFO_OBJECT(element, "%s is back; %" G_GUINT64_FORMAT " results dropped so far", pub_->describe().c_str(),
                      s.dropped);
      warned_ = false;
    }
    dropped_ = s.dropped;
    connects_ = s.connects;
  }

  std::shared_ptr<Publisher> pub_;
  std::string topic_;
  bool per_region_;
  bool warned_ = false;
  uint64_t dropped_ = 0, connects_ = 0;
};

#if PTM_HAVE_ANALYTICS
// A GstAnalyticsClsMtd in the buffer's relation meta: the reported classes
// (label quarks), best first, with their scores as confidence levels. A
// region's is related to the region's GstAnalyticsODMtd (added for regions
// that came without one): region -> class RELATE_TO|CONTAIN, class ->
// region IS_PART_OF, as upstream's objectdetectionoverlay and DL Streamer
// look it up.
class AnalyticsOutput : public ResultOutput {
 public:
  void publish(const Published& p) override {
    GstAnalyticsRelationMeta* rmeta = nullptr;
    auto meta = [&] {
      if (!rmeta) rmeta = gst_buffer_get_analytics_relation_meta(p.buffer);
      if (!rmeta) rmeta = gst_buffer_add_analytics_relation_meta(p.buffer);
      if (!rmeta) throw std::runtime_error("the buffer took no analytics relation meta");
      return rmeta;
    };
    if (!p.regions) {
      GstAnalyticsClsMtd cls;
      if (!p.result.top.empty()) add_classes(meta(), p.result, &cls);
      return;
    }
    for (const RegionResult& g : *p.regions) {
      if (g.result.top.empty()) continue;
      GstAnalyticsODMtd od;
      if (g.od_id >= 0) {
        if (!gst_analytics_relation_meta_get_od_mtd(meta(), guint(g.od_id), &od))
          throw std::runtime_error("the region's object detection is gone from the relation meta");
      } else if (!gst_analytics_relation_meta_add_od_mtd(meta(), g_quark_from_string(g.type.empty() ? "object"
                                                                                                     : g.type.c_str()),
                                                         g.box.x, g.box.y, g.box.width, g.box.height, 1.0f, &od)) {
        throw std::runtime_error("the analytics relation meta took no region");
      }
      GstAnalyticsClsMtd cls;
      add_classes(meta(), g.result, &cls);
      if (!gst_analytics_relation_meta_set_relation(
              meta(), GstAnalyticsRelTypes(GST_ANALYTICS_REL_TYPE_RELATE_TO | GST_ANALYTICS_REL_TYPE_CONTAIN), od.id,
              cls.id) ||
          !gst_analytics_relation_meta_set_relation(meta(), GST_ANALYTICS_REL_TYPE_IS_PART_OF, cls.id, od.id))
        throw std::runtime_error("the analytics relation meta took no relation between a region and its classes");
    }
  }
  const char* failure() const override { return "Could not attach the analytics metadata"; }

 private:
  static void add_classes(GstAnalyticsRelationMeta* rmeta, const FrameResult& r, GstAnalyticsClsMtd* cls) {
    std::vector<gfloat> levels;
    std::vector<GQuark> classes;
    for (size_t i = 0; i < r.top.size(); ++i) {
      levels.push_back(r.top[i].score);
      classes.push_back(g_quark_from_string(r.labels[i].c_str()));
    }
    if (!gst_analytics_relation_meta_add_cls_mtd(rmeta, levels.size(), levels.data(), classes.data(), cls))
      throw std::runtime_error("the analytics relation meta took no classification");
  }
};
#endif

}  // namespace

bool have_analytics() { return PTM_HAVE_ANALYTICS != 0; }

std::string expand_topic(const std::string& tmpl, const DocumentSource& src) {
  auto clean = [](std::string v) {
    for (char& c : v)
      if (c == '/' || c == '+' || c == '#') c = '_';
    return v.empty() ? std::string("none") : v;
  };
  std::string out;
  for (size_t i = 0; i < tmpl.size();) {
    const char* names[] = {"{element}", "{stream}", "{model}"};
    const std::string* values[] = {&src.element, &src.stream, &src.model};
    bool done = false;
    for (int k = 0; k < 3 && !done; ++k) {
      const size_t n = std::strlen(names[k]);
      if (tmpl.compare(i, n, names[k]) == 0) {
        out += clean(*values[k]);
        i += n;
        done = true;
      }
    }
    if (!done) out += tmpl[i++];
  }
  return out;
}

std::vector<std::unique_ptr<ResultOutput>> make_outputs(const OutputOptions& o) {
  std::vector<std::unique_ptr<ResultOutput>> out;
  out.push_back(std::make_unique<MetaOutput>());
#if PTM_HAVE_ANALYTICS
  if (o.analytics) out.push_back(std::make_unique<AnalyticsOutput>());
#endif
  out.push_back(std::make_unique<MessageOutput>());
  if (!o.results_file.empty()) out.push_back(std::make_unique<JsonLinesOutput>(o.results_file));
  if (o.publisher) out.push_back(std::make_unique<PublishOutput>(o.publisher, o.topic, o.publish_regions));
  return out;
}

}  // namespace ptm
