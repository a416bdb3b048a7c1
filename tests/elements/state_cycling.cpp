// State cycling under GStreamer's leaks tracer: one pipeline holding every
// ptm element with a model loaded (ptmpreprocess ! ptminfer ! ptmoverlay,
// and ptmtrainsink on a tee branch) goes NULL -> PLAYING -> NULL again and
// again, frames flowing each time; the resident set may not grow by more
// than the limit after the warm-up cycles (the median of its readings).
// Then the pipeline goes and gst_deinit() runs: the leaks tracer reports every GstObject and
// GstMiniObject still alive (a warning, which fails this test; their list
// with GST_DEBUG=GST_TRACER:7), as GStreamer's own check tests do.
//   test-state-cycling FIXTURES CYCLES OUT_DIR [RSS_LIMIT_MB (default 5) [leak-one-buffer]]
// leak-one-buffer keeps a reference to the first frame: the test must then
// fail (the state-cycling-finds-a-leak test checks that it does).
// The CI form runs a few dozen cycles; the long form (docs/reliability.md)
// 1000.
#include <gst/gst.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

// The resident set once the allocator has given back the free memory it
// holds (glibc keeps freed blocks, e.g. a model's buffers of the previous
// cycle, mapped for a while: readings would step up and down by ~13 MB).
long rss_kb() {
  malloc_trim(0);
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

GstTracer* leaks_tracer() {
  GList* tracers = gst_tracing_get_active_tracers();
  GstTracer* found = nullptr;
  for (GList* l = tracers; l; l = l->next)
    if (!found && std::strcmp(G_OBJECT_TYPE_NAME(l->data), "GstLeaksTracer") == 0)
      found = GST_TRACER(gst_object_ref(l->data));
  g_list_free_full(tracers, gst_object_unref);
  return found;
}

// Warnings and criticals (the leaks tracer warns at gst_deinit() when
// objects are alive), counted and printed.
int warnings = 0;
GLogWriterOutput count_warnings(GLogLevelFlags level, const GLogField* fields, gsize n, gpointer data) {
  if (level & (G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) ++warnings;
  return g_log_writer_default(level, fields, n, data);
}

std::atomic<long> frames{0};
bool leak_one = false;  // the self-check: one buffer leaked on purpose

GstPadProbeReturn count_frame(GstPad*, GstPadProbeInfo* info, gpointer) {
  if (frames.fetch_add(1) == 0 && leak_one) gst_buffer_ref(GST_PAD_PROBE_INFO_BUFFER(info));
  return GST_PAD_PROBE_OK;
}

// Prints the error message on the bus, if any; true when there was one.
bool print_error(GstBus* bus, GstClockTime wait) {
  GstMessage* m = gst_bus_timed_pop_filtered(bus, wait, GST_MESSAGE_ERROR);
  if (!m) return false;
  GError* err = nullptr;
  gchar* dbg = nullptr;
  gst_message_parse_error(m, &err, &dbg);
  std::fprintf(stderr, "state-cycling: error from %s: %s (%s)\n", GST_OBJECT_NAME(m->src), err->message,
               dbg ? dbg : "");
  g_clear_error(&err);
  g_free(dbg);
  gst_message_unref(m);
  return true;
}

// PLAYING until `want` more frames reached the sink, then NULL. False with
// the reason printed on an error message or after 60 s without them.
bool cycle(GstElement* pipe, long want) {
  const long start = frames.load();
  GstBus* bus = gst_element_get_bus(pipe);
  bool ok = false;
  if (gst_element_set_state(pipe, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    if (!print_error(bus, 0)) std::fprintf(stderr, "state-cycling: the pipeline refused PLAYING\n");
    want = -1;
  }
  for (int waited = 0; want >= 0 && waited < 60000; waited += 5) {
    if (frames.load() - start >= want) {
      ok = true;
      break;
    }
    if (print_error(bus, 5 * GST_MSECOND)) break;
  }
  if (!ok && want >= 0 && frames.load() - start < want) std::fprintf(stderr, "state-cycling: no frames after 60 s\n");
  gst_element_set_state(pipe, GST_STATE_NULL);
  gst_bus_set_flushing(bus, TRUE);  // drop what this cycle posted
  gst_bus_set_flushing(bus, FALSE);
  gst_object_unref(bus);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: test-state-cycling FIXTURES CYCLES OUT_DIR [RSS_LIMIT_MB [leak-one-buffer]]\n");
    return 2;
  }
  // One malloc arena: the elements load models on threads that end with the
  // load (gstptmutil.h, on_own_thread; model_slot.h), and what glibc keeps
  // in the arenas of threads gone moved the resident set between levels
  // ~6 MB apart from cycle to cycle; with one arena the reading is the
  // memory in use, and a leak shows plainly.
  mallopt(M_ARENA_MAX, 1);
  const std::string fixtures = argv[1], out = argv[3];
  const int cycles = std::atoi(argv[2]);
  const double rss_limit_mb = argc > 4 ? std::atof(argv[4]) : 5.0;
  leak_one = argc > 5 && std::strcmp(argv[5], "leak-one-buffer") == 0;
  // The leaks tracer, beside any other tracer the caller asked for.
  const char* tracers = g_getenv("GST_TRACERS");
  if (!tracers || !std::strstr(tracers, "leaks"))
    g_setenv("GST_TRACERS", tracers && *tracers ? (std::string(tracers) + ";leaks").c_str() : "leaks", TRUE);
  g_log_set_writer_func(count_warnings, nullptr, nullptr);
  gst_init(&argc, &argv);
  GstTracer* tracer = leaks_tracer();
  if (!tracer) {
    std::fprintf(stderr, "state-cycling: GStreamer's leaks tracer is not active (GStreamer built without tracers?)\n");
    return 1;
  }
  g_mkdir_with_parents(out.c_str(), 0755);
  const std::string model = fixtures + "/shufflenet_v2_x0_5.pth";
  const std::string desc =
      "videotestsrc pattern=ball ! video/x-raw,format=RGBA,width=160,height=120,framerate=30/1 "
      "! ptmpreprocess ! ptminfer model=" + model + " input-size=64 batch-size=2 top-k=3 "
      "! ptmoverlay ! tee name=t ! queue ! fakesink name=sink sync=false "
      "t. ! queue ! videoconvert ! ptmtrainsink model=" + model + " label=ball output=" + out + "/head.pth";
  GError* err = nullptr;
  GstElement* pipe = gst_parse_launch(desc.c_str(), &err);
  if (!pipe) {
    std::fprintf(stderr, "state-cycling: %s\n", err ? err->message : "no pipeline");
    return 1;
  }
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipe), "sink");
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, count_frame, nullptr, nullptr);
  gst_object_unref(pad);
  gst_object_unref(sink);

  const int warmup = 10;
  for (int i = 0; i < warmup; ++i)
    if (!cycle(pipe, 6)) return 1;
  // The resident set after each cycle (rss_kb: after malloc_trim); what is
  // compared is the median reading of the first and of the last tenth of
  // the cycles, so that one reading caught mid-step does not decide.
  std::vector<long> rss;
  const gint64 t0 = g_get_monotonic_time();
  for (int i = 1; i <= cycles; ++i) {
    if (!cycle(pipe, 6)) {
      std::fprintf(stderr, "state-cycling: cycle %d failed\n", i);
      return 1;
    }
    rss.push_back(rss_kb());
    if (i % 100 == 0 || i == cycles)
      std::printf("cycle %d: RSS %.1f MB, %ld frames\n", i, rss.back() / 1024.0, frames.load());
    std::fflush(stdout);
  }
  const double seconds = (g_get_monotonic_time() - t0) / 1e6;
  const size_t tenth = std::min(rss.size(), std::max<size_t>(3, rss.size() / 10));
  auto median = [](std::vector<long> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  const long first = median({rss.begin(), rss.begin() + tenth});
  const long last = median({rss.end() - tenth, rss.end()});
  const long lowest = *std::min_element(rss.begin(), rss.end());
  const long highest = *std::max_element(rss.begin(), rss.end());
  const double growth_mb = (last - first) / 1024.0;
  std::printf("%d cycles NULL -> PLAYING -> NULL after %d warm-up cycles, in %.0f s (%.2f s each, %ld frames); "
              "RSS median %.1f MB over the first tenth of the cycles, %.1f MB over the last: %+.1f MB (limit %.1f; "
              "readings from %.1f to %.1f MB)\n",
              cycles, warmup, seconds, seconds / cycles, frames.load(), first / 1024.0, last / 1024.0, growth_mb,
              rss_limit_mb, lowest / 1024.0, highest / 1024.0);
  gst_object_unref(pipe);
  gst_object_unref(tracer);
  const int before_deinit = warnings;
  gst_deinit();
  const int leak_warnings = warnings - before_deinit;
  std::printf("leaks tracer at gst_deinit(): %s; %d warning(s) or critical(s) in all\n",
              leak_warnings ? "objects still alive (listed with GST_DEBUG=GST_TRACER:7)" : "no object alive",
              warnings);
  std::fflush(stdout);
  return warnings == 0 && growth_mb < rss_limit_mb ? 0 : 1;
}
