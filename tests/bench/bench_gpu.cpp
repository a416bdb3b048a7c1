// GPU pipeline benchmark: frames already in CUDA memory (GstCudaMemory)
// -> ptminfer device=cuda (fused preprocessing kernel + LibTorch) ->
// fakesink, images per second for each model, precision and batch size,
// and the time per frame at batch 1. tests/bench/bench_gpu.py runs it next
// to PyTorch-Python on the same frames and prints both side by side.
//
//   bench-gpu --frames-out RAW --width W --height H --count K
//             MODEL:NAME ... -- PRECISION ... -- BATCH ...
//
// Prints one JSON object per run. The K distinct frames (videotestsrc's
// moving ball) are uploaded once; RAW receives them (K x H x W x RGBA) for
// the Python side.
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Frames {
  std::vector<GstBuffer*> gpu;
  GstCaps* caps = nullptr;
};

// K frames uploaded by cudaupload. ptmoverlay answers the CUDA context
// query, so the frames are in the device's primary context (as in any
// pipeline with a ptm element); it draws nothing on frames without results.
Frames capture(int w, int h, int k, const std::string& raw_out) {
  const std::string desc = "videotestsrc num-buffers=" + std::to_string(k) +
                           " pattern=ball ! video/x-raw,format=RGBA,width=" + std::to_string(w) +
                           ",height=" + std::to_string(h) +
                           ",framerate=30/1 ! tee name=t t. ! queue ! cudaupload ! "
                           "video/x-raw(memory:CUDAMemory) ! ptmoverlay ! appsink name=gpu sync=false "
                           "t. ! queue ! appsink name=cpu sync=false";
  GError* err = nullptr;
  GstElement* p = gst_parse_launch(desc.c_str(), &err);
  if (!p || err) {
    std::fprintf(stderr, "capture pipeline: %s (a GPU and gst-plugins-bad's nvcodec plugin are needed)\n",
                 err ? err->message : "?");
    std::exit(1);
  }
  GstElement* gpu = gst_bin_get_by_name(GST_BIN(p), "gpu");
  GstElement* cpu = gst_bin_get_by_name(GST_BIN(p), "cpu");
  gst_element_set_state(p, GST_STATE_PLAYING);
  Frames f;
  std::ofstream raw(raw_out, std::ios::binary);
  for (int i = 0; i < k; ++i) {
    GstSample* g = gst_app_sink_try_pull_sample(GST_APP_SINK(gpu), 60 * GST_SECOND);
    GstSample* c = gst_app_sink_try_pull_sample(GST_APP_SINK(cpu), 60 * GST_SECOND);
    if (!g || !c) {
      std::fprintf(stderr, "capture failed at frame %d (is nvcodec's cudaupload there?)\n", i);
      std::exit(1);
    }
    if (!f.caps) f.caps = gst_caps_copy(gst_sample_get_caps(g));
    f.gpu.push_back(gst_buffer_ref(gst_sample_get_buffer(g)));
    GstMapInfo m;
    gst_buffer_map(gst_sample_get_buffer(c), &m, GST_MAP_READ);
    raw.write(reinterpret_cast<const char*>(m.data), std::streamsize(size_t(w) * h * 4));
    gst_buffer_unmap(gst_sample_get_buffer(c), &m);
    gst_sample_unref(g);
    gst_sample_unref(c);
  }
  gst_element_set_state(p, GST_STATE_NULL);
  gst_object_unref(gpu);
  gst_object_unref(cpu);
  gst_object_unref(p);
  return f;
}

struct Counter {
  std::atomic<int> n{0};
  int warmup = 0;
  Clock::time_point start, end;
};

GstPadProbeReturn count(GstPad*, GstPadProbeInfo*, gpointer data) {
  auto* c = static_cast<Counter*>(data);
  const int n = ++c->n;
  if (n == c->warmup) c->start = Clock::now();
  c->end = Clock::now();
  return GST_PAD_PROBE_OK;
}

// Images per second through ptminfer with these settings.
double run(const Frames& f, const std::string& model, const std::string& precision, int batch, int total,
           int warmup, std::string* error) {
  const std::string desc = "appsrc name=src format=time max-buffers=256 block=true ! ptminfer name=infer device=cuda "
                           "post-messages=false cuda-graphs=true precision=" + precision +
                           " batch-size=" + std::to_string(batch) + " model=" + model + " ! fakesink name=sink sync=false";
  GError* err = nullptr;
  GstElement* p = gst_parse_launch(desc.c_str(), &err);
  if (!p || err) {
    *error = err ? err->message : "cannot build the pipeline";
    if (p) gst_object_unref(p);
    return 0;
  }
  GstElement* src = gst_bin_get_by_name(GST_BIN(p), "src");
  GstElement* sink = gst_bin_get_by_name(GST_BIN(p), "sink");
  gst_app_src_set_caps(GST_APP_SRC(src), f.caps);
  Counter c;
  c.warmup = warmup;
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, count, &c, nullptr);
  gst_element_set_state(p, GST_STATE_PLAYING);
  for (int i = 0; i < total; ++i) {
    GstBuffer* b = gst_buffer_copy(f.gpu[size_t(i) % f.gpu.size()]);  // shares the CUDA memory
    GST_BUFFER_PTS(b) = GstClockTime(i) * GST_SECOND / 30;
    if (gst_app_src_push_buffer(GST_APP_SRC(src), b) != GST_FLOW_OK) break;
  }
  gst_app_src_end_of_stream(GST_APP_SRC(src));
  GstBus* bus = gst_element_get_bus(p);
  GstMessage* m = gst_bus_timed_pop_filtered(bus, 600 * GST_SECOND, GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  double ips = 0;
  if (m && GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR) {
    GError* e = nullptr;
    gchar* dbg = nullptr;
    gst_message_parse_error(m, &e, &dbg);
    *error = std::string(e->message) + " | " + (dbg ? dbg : "");
    g_error_free(e);
    g_free(dbg);
  } else if (c.n.load() == total) {
    ips = double(total - warmup) / std::chrono::duration<double>(c.end - c.start).count();
  } else {
    *error = "only " + std::to_string(c.n.load()) + " of " + std::to_string(total) + " frames came out";
  }
  if (m) gst_message_unref(m);
  gst_element_set_state(p, GST_STATE_NULL);
  gst_object_unref(pad);
  gst_object_unref(bus);
  gst_object_unref(src);
  gst_object_unref(sink);
  gst_object_unref(p);
  return ips;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    if (ch == '\n') {
      o += "\\n";
      continue;
    }
    o += ch;
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  std::string raw = "/tmp/ptm-bench-frames.rgba";
  int w = 1920, h = 1080, k = 64;
  std::vector<std::string> models, precisions;
  std::vector<int> batches;
  int section = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--frames-out" && i + 1 < argc) raw = argv[++i];
    else if (a == "--width" && i + 1 < argc) w = std::atoi(argv[++i]);
    else if (a == "--height" && i + 1 < argc) h = std::atoi(argv[++i]);
    else if (a == "--count" && i + 1 < argc) k = std::atoi(argv[++i]);
    else if (a == "--") ++section;
    else if (section == 0) models.push_back(a);
    else if (section == 1) precisions.push_back(a);
    else batches.push_back(std::atoi(a.c_str()));
  }
  if (models.empty() || precisions.empty() || batches.empty()) {
    std::fprintf(stderr, "usage: bench-gpu [--frames-out RAW] [--width W] [--height H] [--count K] "
                         "MODEL:NAME ... -- PRECISION ... -- BATCH ...\n");
    return 2;
  }
  Frames f = capture(w, h, k, raw);
  std::printf("{\"frames\": \"%s\", \"width\": %d, \"height\": %d, \"count\": %d}\n", raw.c_str(), w, h, k);
  std::fflush(stdout);
  for (const auto& spec : models) {
    const std::string path = spec.substr(0, spec.find(':'));
    const std::string name = spec.find(':') == std::string::npos ? spec : spec.substr(spec.find(':') + 1);
    for (const auto& prec : precisions) {
      for (int b : batches) {
        const int total = b == 1 ? 600 : std::max(2000, 150 * b);
        const int warmup = std::max(8 * b, 40);
        std::string error;
        const double ips = run(f, path, prec, b, total, warmup, &error);
        std::printf("{\"model\": \"%s\", \"precision\": \"%s\", \"batch\": %d, \"images_per_s\": %.1f, "
                    "\"ms_per_frame\": %.3f, \"error\": \"%s\"}\n",
                    name.c_str(), prec.c_str(), b, ips, ips > 0 ? 1000.0 / ips : 0.0, json_escape(error).c_str());
        std::fflush(stdout);
      }
    }
  }
  for (GstBuffer* b : f.gpu) gst_buffer_unref(b);
  gst_caps_unref(f.caps);
  return 0;
}
