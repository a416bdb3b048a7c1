// Embedding ptm in a C++ application: builds a pipeline, reads each frame's
// GstPtmClassificationMeta in a pad probe, and prints the top labels.
//
//   ptm-embed-example MODEL [VIDEO] [FRAMES]
//
// Exits 0 when every frame carried results, 1 otherwise.
#include <gst/gst.h>
#include <gst/ptm/ptmmeta.h>

#include <cstdio>
#include <string>

namespace {

struct Counts {
  int frames = 0, with_results = 0;
};

GstPadProbeReturn on_buffer(GstPad*, GstPadProbeInfo* info, gpointer data) {
  auto* counts = static_cast<Counts*>(data);
  GstBuffer* buf = GST_PAD_PROBE_INFO_BUFFER(info);
  ++counts->frames;
  if (const GstPtmClassificationMeta* m = gst_buffer_get_ptm_classification_meta(buf)) {
    if (m->n_results > 0) ++counts->with_results;
    std::printf("frame %3" G_GUINT64_FORMAT " %s %5.1f ms:", m->frame_number, m->model,
                double(m->inference_ns) / 1e6);
    for (guint i = 0; i < m->n_results; ++i) std::printf("  %s (%.3f)", m->labels[i], m->scores[i]);
    std::printf("\n");
  }
  return GST_PAD_PROBE_OK;
}

// Lets `limit` buffers through the pad, then ends the stream there (EOS
// downstream) and drops whatever still comes.
struct Limit {
  int limit, seen = 0;
};

GstPadProbeReturn stop_after(GstPad* pad, GstPadProbeInfo*, gpointer data) {
  auto* l = static_cast<Limit*>(data);
  if (++l->seen <= l->limit) return GST_PAD_PROBE_OK;
  if (l->seen == l->limit + 1) {
    GstPad* peer = gst_pad_get_peer(pad);
    gst_pad_send_event(peer, gst_event_new_eos());
    gst_object_unref(peer);
  }
  return GST_PAD_PROBE_DROP;
}

}  // namespace

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [VIDEO] [FRAMES]\n", argv[0]);
    return 2;
  }
  const std::string model = argv[1];
  const std::string video = argc > 2 ? argv[2] : "";
  const int frames = argc > 3 ? std::atoi(argv[3]) : 10;
  const std::string src = video.empty() ? "videotestsrc pattern=ball" : "filesrc location=\"" + video + "\" ! decodebin";
  const std::string desc = src + " ! videoconvert name=convert ! ptmpreprocess ! ptminfer name=infer top-k=3 model=\"" +
                           model + "\" ! fakesink sync=false";
  GError* err = nullptr;
  GstElement* pipeline = gst_parse_launch(desc.c_str(), &err);
  if (!pipeline) {
    std::fprintf(stderr, "cannot build the pipeline: %s\n", err ? err->message : "?");
    return 1;
  }
  Limit limit{frames};
  if (frames > 0) {  // 0: the whole video
    GstElement* convert = gst_bin_get_by_name(GST_BIN(pipeline), "convert");
    GstPad* out = gst_element_get_static_pad(convert, "src");
    gst_pad_add_probe(out, GST_PAD_PROBE_TYPE_BUFFER, stop_after, &limit, nullptr);
    gst_object_unref(out);
    gst_object_unref(convert);
  }
  Counts counts;
  GstElement* infer = gst_bin_get_by_name(GST_BIN(pipeline), "infer");
  GstPad* pad = gst_element_get_static_pad(infer, "src");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, &counts, nullptr);
  gst_object_unref(pad);
  gst_object_unref(infer);

  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* msg = gst_bus_timed_pop_filtered(bus, GST_CLOCK_TIME_NONE,
                                               GstMessageType(GST_MESSAGE_ERROR | GST_MESSAGE_EOS));
  int status = 0;
  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
    GError* e = nullptr;
    gst_message_parse_error(msg, &e, nullptr);
    std::fprintf(stderr, "error: %s\n", e->message);
    g_error_free(e);
    status = 1;
  }
  gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
  std::printf("%d frames, %d with results\n", counts.frames, counts.with_results);
  if (counts.frames == 0 || counts.with_results != counts.frames) status = 1;
  return status;
}
