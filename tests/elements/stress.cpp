// Stress under ThreadSanitizer: each element in a GstHarness, with threads
// pushing buffers, pushing events (flushes, gaps, custom serialized events,
// EOS), sending QoS upstream, setting properties (model swaps included),
// reading its stats and changing its state, all at once, for SECONDS a case.
// Built with -fsanitize=thread against a ThreadSanitizer build of the
// elements (tests/tsan/meson.build); a race report fails the run through
// TSAN_OPTIONS exitcode.
//
//   test-stress FIXTURES_DIR SECONDS OUT_DIR [race-on-purpose]
//
// race-on-purpose: two threads call ptmoverlay's transform directly, on
// one element, without the pad's stream lock (what GStreamer never does):
// the element's frame-rate bookkeeping races, and the run must fail. It
// proves the elements are instrumented and that reports fail the test.
//
// GLib's mutexes and conditions are futexes ThreadSanitizer cannot see:
// GStreamer's object and stream locks would look like no synchronisation
// at all. The functions below stand in for GLib's (the program exports
// them, so libgstreamer and the elements call these) and tell
// ThreadSanitizer what each lock orders.
#include <dlfcn.h>
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gst/video/video.h>
#include <sanitizer/tsan_interface.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#define PTM_REAL(name)                                                           \
  static const auto real = [] {                                                  \
    auto f = reinterpret_cast<decltype(&name)>(dlsym(RTLD_NEXT, #name));         \
    if (!f) {                                                                    \
      std::fprintf(stderr, "test-stress: no %s after this program\n", #name);   \
      std::abort();                                                              \
    }                                                                            \
    return f;                                                                    \
  }()

extern "C" {
void g_mutex_lock(GMutex* m) {
  PTM_REAL(g_mutex_lock);
  real(m);
  __tsan_acquire(m);
}
gboolean g_mutex_trylock(GMutex* m) {
  PTM_REAL(g_mutex_trylock);
  if (!real(m)) return FALSE;
  __tsan_acquire(m);
  return TRUE;
}
void g_mutex_unlock(GMutex* m) {
  PTM_REAL(g_mutex_unlock);
  __tsan_release(m);
  real(m);
}
void g_rec_mutex_lock(GRecMutex* m) {
  PTM_REAL(g_rec_mutex_lock);
  real(m);
  __tsan_acquire(m);
}
gboolean g_rec_mutex_trylock(GRecMutex* m) {
  PTM_REAL(g_rec_mutex_trylock);
  if (!real(m)) return FALSE;
  __tsan_acquire(m);
  return TRUE;
}
void g_rec_mutex_unlock(GRecMutex* m) {
  PTM_REAL(g_rec_mutex_unlock);
  __tsan_release(m);
  real(m);
}
void g_cond_wait(GCond* c, GMutex* m) {
  PTM_REAL(g_cond_wait);
  __tsan_release(m);
  real(c, m);
  __tsan_acquire(m);
}
gboolean g_cond_wait_until(GCond* c, GMutex* m, gint64 end) {
  PTM_REAL(g_cond_wait_until);
  __tsan_release(m);
  const gboolean r = real(c, m, end);
  __tsan_acquire(m);
  return r;
}
// Readers are ordered after writers and (more than needed) after each other.
void g_rw_lock_writer_lock(GRWLock* l) {
  PTM_REAL(g_rw_lock_writer_lock);
  real(l);
  __tsan_acquire(l);
}
void g_rw_lock_writer_unlock(GRWLock* l) {
  PTM_REAL(g_rw_lock_writer_unlock);
  __tsan_release(l);
  real(l);
}
void g_rw_lock_reader_lock(GRWLock* l) {
  PTM_REAL(g_rw_lock_reader_lock);
  real(l);
  __tsan_acquire(l);
}
void g_rw_lock_reader_unlock(GRWLock* l) {
  PTM_REAL(g_rw_lock_reader_unlock);
  __tsan_release(l);
  real(l);
}
}

namespace {

std::string fixtures, out_dir;

struct Toggle {
  GstElement* element;
  std::function<void(GstElement*, unsigned)> set;
  std::atomic<unsigned> n{0};
};

void toggle_cb(gpointer /*thread*/, gpointer data) {
  auto* t = static_cast<Toggle*>(data);
  t->set(t->element, t->n++);
}

GstEvent* serialized_event(GstHarness*, gpointer data) {
  const unsigned n = (*static_cast<std::atomic<unsigned>*>(data))++;
  switch (n % 5) {
    case 0:
      return gst_event_new_flush_start();
    case 1:
      return gst_event_new_flush_stop(TRUE);
    case 2: {  // the flush took the segment
      GstSegment segment;
      gst_segment_init(&segment, GST_FORMAT_TIME);
      return gst_event_new_segment(&segment);
    }
    case 3:
      return gst_event_new_gap(GST_SECOND * n / 30, GST_SECOND / 30);
    default:
      return gst_event_new_custom(GST_EVENT_CUSTOM_DOWNSTREAM,
                                  gst_structure_new("ptm-stress", "n", G_TYPE_UINT, n, nullptr));
  }
}

// Frames pushed so far (both pushing threads): timestamps move on.
struct Frames {
  GstHarness* h;
  GstBuffer* templ;
  std::atomic<guint64> n{0};
};

// Pushes the next frame. (GstHarness's own buffer threads assert that
// their first stream-start, caps and segment are taken, which a concurrent
// flush or state change can refuse: these threads only push frames, and
// the element hears of the stream again from resync_event.)
void push_frame(gpointer /*thread*/, gpointer data) {
  auto* f = static_cast<Frames*>(data);
  GstBuffer* b = gst_buffer_copy_deep(f->templ);
  const guint64 n = f->n++;
  GST_BUFFER_PTS(b) = n * GST_SECOND / 30;
  GST_BUFFER_DURATION(b) = GST_SECOND / 30;
  gst_harness_push(f->h, b);
}

// Downstream's QoS: mostly frames on time (earliest 0.3 s behind the
// newest), every tenth event a little ahead (frames dropped as late).
struct Qos {
  Frames* frames;
  std::atomic<unsigned> n{0};
};

GstEvent* qos_event(GstHarness*, gpointer data) {
  auto* q = static_cast<Qos*>(data);
  const unsigned n = q->n++;
  const GstClockTime newest = q->frames->n.load() * GST_SECOND / 30;
  const GstClockTime ts = n % 10 == 0 ? newest + 100 * GST_MSECOND
                                      : (newest > 300 * GST_MSECOND ? newest - 300 * GST_MSECOND : 0);
  const GstClockTimeDiff diff = GstClockTimeDiff(n % 40) * GST_MSECOND - 20 * GST_MSECOND;
  return gst_event_new_qos(GST_QOS_TYPE_UNDERFLOW, 0.9 + (n % 5) * 0.1, std::max<GstClockTimeDiff>(diff, -GstClockTimeDiff(ts)),
                           ts);
}

// After a state change the element has forgotten the stream (and a flush
// its segment): stream-start, caps and segment again, in turn.
struct Resync {
  GstCaps* caps;
  std::atomic<unsigned> n{0};
};

GstEvent* resync_event(GstHarness*, gpointer data) {
  auto* r = static_cast<Resync*>(data);
  switch (r->n++ % 3) {
    case 0:
      return gst_event_new_stream_start("ptm-stress");
    case 1:
      return gst_event_new_caps(r->caps);
    default: {
      GstSegment segment;
      gst_segment_init(&segment, GST_FORMAT_TIME);
      return gst_event_new_segment(&segment);
    }
  }
}

GstElement* child(GstHarness* h, const char* name) {
  if (!GST_IS_BIN(h->element)) return GST_ELEMENT(gst_object_ref(h->element));
  return gst_bin_get_by_name(GST_BIN(h->element), name);
}

struct Case {
  std::string name, launch;
  // Properties toggled while playing: (element name, setter).
  std::vector<std::pair<std::string, std::function<void(GstElement*, unsigned)>>> toggles;
  bool eos = false;  // also EOS now and then (ptmtrainsink trains on it)
  // Between state changes: each start of a model element loads its model
  // (~0.5 s here under ThreadSanitizer), frames need time to flow.
  gulong state_sleep_us = 150000;
};

// Frames leaving the element with classification meta.
GstPadProbeReturn count_classified(GstPad*, GstPadProbeInfo* info, gpointer data) {
  static const GType api = g_type_from_name("GstPtmClassificationMetaAPI");
  GstBuffer* b = GST_PAD_PROBE_INFO_BUFFER(info);
  if (b && api && gst_buffer_get_meta(b, api)) ++*static_cast<std::atomic<guint64>*>(data);
  return GST_PAD_PROBE_OK;
}

// GStreamer's "Got data flow before segment event" (or "stream-start
// event"), "Sticky event misordering": a frame of the second pushing
// thread, or the resync thread's caps, landing after a state change or
// flush and before the stream-start and segment. Meant here, and
// thousands a run: counted, not printed (they would bury a
// ThreadSanitizer report). Every other message is printed, and a critical
// (a g_return_if_fail, a property value refused: an API misused, by this
// test or an element) fails the run.
std::atomic<guint64> early_frames{0}, criticals{0};

void log_message(const gchar* domain, GLogLevelFlags level, const gchar* message, gpointer) {
  if (message && (std::strstr(message, "Got data flow before segment event") ||
                  std::strstr(message, "Got data flow before stream-start event") ||
                  std::strstr(message, "Sticky event misordering"))) {
    ++early_frames;
    return;
  }
  if (level & G_LOG_LEVEL_CRITICAL) ++criticals;
  g_log_default_handler(domain, level, message, nullptr);
}

int run_case(const Case& c, double seconds) {
  std::printf("[ stress ] %s: %s, %.0f s\n", c.name.c_str(), c.launch.c_str(), seconds);
  std::fflush(stdout);
  early_frames = 0;
  std::fprintf(stderr, "[ stress ] %s\n", c.name.c_str());  // where a report below comes from
  GstHarness* h = gst_harness_new_parse(c.launch.c_str());
  gst_harness_set_drop_buffers(h, TRUE);
  std::atomic<guint64> classified{0};
  if (h->sinkpad) gst_pad_add_probe(h->sinkpad, GST_PAD_PROBE_TYPE_BUFFER, count_classified, &classified, nullptr);
  gst_harness_play(h);
  GstCaps* caps = gst_caps_from_string("video/x-raw,format=RGB,width=64,height=48,framerate=30/1");
  GstBuffer* buf = gst_buffer_new_allocate(nullptr, 64 * 48 * 3, nullptr);
  gst_buffer_memset(buf, 0, 0x80, 64 * 48 * 3);
  GST_BUFFER_PTS(buf) = 0;
  GST_BUFFER_DURATION(buf) = GST_SECOND / 30;

  std::vector<GstHarnessThread*> threads;
  std::vector<std::string> what;
  gst_harness_set_src_caps(h, gst_caps_ref(caps));  // stream-start, caps, segment
  Frames frames{h, buf};
  threads.push_back(gst_harness_stress_custom_start(h, nullptr, push_frame, &frames, 0));
  what.push_back("buffers pushed");
  threads.push_back(gst_harness_stress_custom_start(h, nullptr, push_frame, &frames, 2000));
  what.push_back("buffers pushed by a second thread");
  Resync resync{caps};
  threads.push_back(gst_harness_stress_push_event_with_cb_start_full(h, resync_event, &resync, nullptr, 3000));
  what.push_back("stream-start, caps and segment events again");
  std::atomic<unsigned> events{0};
  Qos qos{&frames};
  threads.push_back(gst_harness_stress_push_event_with_cb_start_full(h, serialized_event, &events, nullptr, 20000));
  what.push_back("events (flush, gap, custom)");
  if (h->sinkpad) {  // not for sinks
    threads.push_back(gst_harness_stress_push_upstream_event_with_cb_start_full(h, qos_event, &qos, nullptr, 5000));
    what.push_back("QoS events upstream");
  }
  if (c.eos) {
    threads.push_back(gst_harness_stress_push_event_start_full(h, gst_event_new_eos(), 400000));
    what.push_back("EOS events");
  }
  threads.push_back(gst_harness_stress_statechange_start_full(h, c.state_sleep_us));
  what.push_back("state changes");
  std::vector<std::unique_ptr<Toggle>> toggles;
  for (const auto& [name, set] : c.toggles) {
    auto t = std::make_unique<Toggle>();
    t->element = child(h, name.c_str());
    t->set = set;
    threads.push_back(gst_harness_stress_custom_start(h, nullptr, toggle_cb, t.get(), 30000));
    what.push_back("property sets on " + name);
    toggles.push_back(std::move(t));
  }
  // Reading stats while frames flow.
  GstElement* infer = child(h, "infer");
  Toggle stats_reader{infer, [](GstElement* e, unsigned) {
                        if (!e || !g_object_class_find_property(G_OBJECT_GET_CLASS(e), "stats")) return;
                        GstStructure* s = nullptr;
                        g_object_get(e, "stats", &s, nullptr);
                        if (s) gst_structure_free(s);
                      }};
  threads.push_back(gst_harness_stress_custom_start(h, nullptr, toggle_cb, &stats_reader, 10000));
  what.push_back("stats reads");

  g_usleep(gulong(seconds * G_USEC_PER_SEC));
  for (size_t i = 0; i < threads.size(); ++i) {
    const guint n = gst_harness_stress_thread_stop(threads[i]);
    std::printf("[ stress ] %s: %u %s\n", c.name.c_str(), n, what[i].c_str());
  }
  std::printf("[ stress ] %s: %" G_GUINT64_FORMAT " warnings of a frame or event before the stream's start or segment (not printed)\n",
              c.name.c_str(), early_frames.load());
  if (h->sinkpad && infer)
    std::printf("[ stress ] %s: %" G_GUINT64_FORMAT " frames came out classified\n", c.name.c_str(), classified.load());
  if (infer) {  // what the model did meanwhile (since the last start)
    GstStructure* st = nullptr;
    g_object_get(infer, "stats", &st, nullptr);
    if (st) {
      gchar* text = gst_structure_to_string(st);
      std::printf("[ stress ] %s: stats at the end: %s\n", c.name.c_str(), text);
      g_free(text);
      gst_structure_free(st);
    }
  }
  std::fflush(stdout);
  for (auto& t : toggles) gst_object_unref(t->element);
  if (infer) gst_object_unref(infer);
  gst_buffer_unref(buf);
  gst_caps_unref(caps);
  gst_harness_teardown(h);
  return 0;
}

// Two threads in ptmoverlay's transform at once (see the top).
int race_on_purpose() {
  GstElement* e = gst_element_factory_make("ptmoverlay", nullptr);
  if (!e) return 2;
  GstCaps* caps = gst_caps_from_string("video/x-raw,format=RGB,width=64,height=48,framerate=30/1");
  GstHarness* h = gst_harness_new_with_element(e, "sink", "src");
  gst_harness_set_caps(h, gst_caps_ref(caps), caps);
  gst_harness_push(h, gst_buffer_new_allocate(nullptr, 64 * 48 * 3, nullptr));
  gst_buffer_unref(gst_harness_pull(h));
  auto body = [](gpointer data) -> gpointer {
    auto* el = static_cast<GstElement*>(data);
    auto fn = GST_BASE_TRANSFORM_GET_CLASS(el)->transform_ip;
    for (int i = 0; i < 200; ++i) {
      GstBuffer* b = gst_buffer_new_allocate(nullptr, 64 * 48 * 3, nullptr);
      GST_BUFFER_PTS(b) = GST_SECOND * guint64(i) / 30;
      fn(GST_BASE_TRANSFORM(el), b);
      gst_buffer_unref(b);
    }
    return nullptr;
  };
  GThread* a = g_thread_new("race-a", body, e);
  GThread* b = g_thread_new("race-b", body, e);
  g_thread_join(a);
  g_thread_join(b);
  gst_object_unref(e);
  gst_harness_teardown(h);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  for (const char* domain : {"GStreamer", "GLib-GObject", "GLib"})
    g_log_set_handler(domain, GLogLevelFlags(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL), log_message, nullptr);
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s FIXTURES_DIR SECONDS OUT_DIR [race-on-purpose]\n", argv[0]);
    return 2;
  }
  fixtures = argv[1];
  const double seconds = std::atof(argv[2]);
  out_dir = argv[3];
  g_mkdir_with_parents(out_dir.c_str(), 0755);
  // The instrumented plugin, by its path (named so that registry scans skip it).
  if (const char* path = g_getenv("PTM_STRESS_PLUGIN")) {
    GError* error = nullptr;
    GstPlugin* plugin = gst_plugin_load_file(path, &error);
    if (!plugin) {
      std::fprintf(stderr, "test-stress: cannot load %s: %s\n", path, error ? error->message : "?");
      return 2;
    }
    gst_object_unref(plugin);
  }
  if (!gst_element_factory_find("ptminfer")) {
    std::fprintf(stderr, "test-stress: no ptminfer (set PTM_STRESS_PLUGIN to the plugin's file)\n");
    return 2;
  }
  if (argc > 4 && std::strcmp(argv[4], "race-on-purpose") == 0) return race_on_purpose();

  const std::string a = fixtures + "/resnet18.pth", b = fixtures + "/mobilenet_v3_small.pth";
  auto set_model = [a, b](GstElement* e, unsigned n) { g_object_set(e, "model", n % 2 ? b.c_str() : a.c_str(), nullptr); };
  std::vector<Case> cases;
  cases.push_back({"ptminfer",
                   "ptminfer name=infer model=" + a + " input-size=32 top-k=3",
                   {{"infer", set_model},
                    {"infer",
                     [](GstElement* e, unsigned n) {
                       g_object_set(e, "top-k", guint(1 + n % 5), "smoothing", (n % 3) * 0.3, "hysteresis", guint(n % 3),
                                    "interval", guint(1 + n % 3), "threshold", (n % 4) * 0.1, "post-messages",
                                    gboolean(n % 2), nullptr);
                     }}},
                   false,
                   1000000});
  cases.push_back({"ptminfer batch-size=3",
                   "ptminfer name=infer model=" + b + " input-size=32 batch-size=3 top-k=2",
                   {{"infer", set_model},
                    {"infer", [](GstElement* e, unsigned n) { g_object_set(e, "output", gint(n % 3), nullptr); }}},
                   false,
                   1000000});
  cases.push_back({"ptmpreprocess",
                   "ptmpreprocess name=pre size=32",
                   {{"pre", [](GstElement* e, unsigned n) {
                      g_object_set(e, "size", gint(16 + 8 * (n % 4)), "resize", gint(n % 2 ? 40 : 48), "interpolation",
                                   gint(n % 2), "resize-mode", gint(n % 3), nullptr);
                    }}}});
  cases.push_back({"ptmpreprocess ! ptminfer ! ptmoverlay",
                   "ptmpreprocess name=pre size=32 ! ptminfer name=infer model=" + a +
                       " ! ptmoverlay name=overlay show-timing=true",
                   {{"overlay",
                     [](GstElement* e, unsigned n) {
                       g_object_set(e, "position", gint(n % 4), "show-bars", gboolean(n % 2), "max-results",
                                    guint(n % 4), "font-scale", 0.3 + 0.1 * (n % 3), nullptr);
                     }},
                    {"infer", set_model}},
                   false,
                   1000000});
  cases.push_back({"ptmtrainsink",
                   "ptmtrainsink name=train model=" + a + " epochs=2 max-samples=8 output=" + out_dir +
                       "/stress.pth",
                   {{"train",
                     [](GstElement* e, unsigned n) {
                       const char* labels[] = {"cat", "dog", ""};
                       g_object_set(e, "label", labels[n % 3], "learning-rate", 0.01 * (1 + n % 3), nullptr);
                     }}},
                   true,
                   1000000});
  // PTM_STRESS_CASE=NAME: only the case of that name (a long run of one).
  const char* only = g_getenv("PTM_STRESS_CASE");
  bool ran = false;
  for (const auto& c : cases)
    if (!only || c.name == only) {
      run_case(c, seconds);
      ran = true;
    }
  if (!ran) {
    std::fprintf(stderr, "test-stress: no case named \"%s\"\n", only);
    return 2;
  }
  if (criticals > 0) {
    std::printf("[ stress ] %" G_GUINT64_FORMAT " criticals (printed above): failed\n", criticals.load());
    return 1;
  }
  std::printf("[ stress ] done\n");
  return 0;
}
