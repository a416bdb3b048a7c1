// No large allocation a frame in steady state: pipelines of the elements
// run 720p / 1080p frames, and after warm-up frames every allocation of
// 64 KiB or more made by any thread of the process is counted (malloc and
// its kin are interposed by this executable). A frame that allocates its
// tensor, its activations or a drawing buffer anew costs the allocator,
// and, as glibc's thresholds stand, page faults; each case must count none.
// A control case allocates 256 KiB a frame in a pad probe: the counter must
// see it, or the test fails (it would pass for nothing). A buffer pool
// making one more buffer (the source's, as more frames come to be in flight
// at once) is counted apart: pools recycle by design.
//   test-steady-alloc FIXTURES_DIR
#include <dlfcn.h>
#include <execinfo.h>
#include <gst/gst.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);
}

namespace {

constexpr size_t kLarge = 64 * 1024;
constexpr int kFrames = 160, kWarm = 40;

std::atomic<bool> counting{false};
std::atomic<long> large{0}, large_bytes{0}, pool_growth{0};
// The first large allocation counted in a case: where it came from.
std::atomic<bool> have_trace{false};
void* trace[32];
int trace_depth = 0;
size_t trace_bytes = 0;
thread_local bool in_seen = false;

// A buffer pool making one more buffer (the test's source, when more of
// its frames than before are in flight at once: a queue filling up) is
// the pool's own growth, bounded by design: counted apart.
bool from_buffer_pool(void* const* f, int n) {
  for (int i = 0; i < n; ++i) {
    Dl_info d;
    if (dladdr(f[i], &d) && d.dli_sname && std::strcmp(d.dli_sname, "gst_buffer_pool_acquire_buffer") == 0)
      return true;
  }
  return false;
}

void seen(size_t n) {
  if (n < kLarge || !counting.load(std::memory_order_relaxed) || in_seen) return;
  in_seen = true;
  void* f[32];
  const int depth = backtrace(f, 32);
  if (from_buffer_pool(f, depth)) {
    pool_growth.fetch_add(1);
  } else {
    large.fetch_add(1);
    large_bytes.fetch_add(long(n));
    bool expected = false;
    if (have_trace.compare_exchange_strong(expected, true)) {
      std::memcpy(trace, f, sizeof f);
      trace_depth = depth;
      trace_bytes = n;
    }
  }
  in_seen = false;
}

}  // namespace

extern "C" {
void* malloc(size_t n) {
  seen(n);
  return __libc_malloc(n);
}
void* calloc(size_t a, size_t b) {
  seen(a * b);
  return __libc_calloc(a, b);
}
void* realloc(void* p, size_t n) {
  seen(n);
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
void* memalign(size_t a, size_t n) {
  seen(n);
  return __libc_memalign(a, n);
}
void* aligned_alloc(size_t a, size_t n) {
  seen(n);
  return __libc_memalign(a, n);
}
int posix_memalign(void** p, size_t a, size_t n) {
  seen(n);
  *p = __libc_memalign(a, n);
  return *p ? 0 : ENOMEM;
}
}

namespace {

struct Case {
  std::string name, launch;
  bool control = false;  // allocates 256 KiB a frame itself
};

std::atomic<int> frames{0};
bool control_case = false;

GstPadProbeReturn on_buffer(GstPad*, GstPadProbeInfo*, gpointer) {
  const int f = ++frames;
  if (f == kWarm) {
    large = 0;
    large_bytes = 0;
    pool_growth = 0;
    have_trace = false;
    counting = true;
  }
  if (control_case) {
    void* volatile p = malloc(256 * 1024);
    std::memset(p, 0, 64);
    free(p);
  }
  return GST_PAD_PROBE_OK;
}

// Runs one case: the large allocations a counted frame (-1: it failed).
double run(const Case& c, int* counted) {
  GError* err = nullptr;
  GstElement* p = gst_parse_launch(c.launch.c_str(), &err);
  if (!p) {
    std::fprintf(stderr, "%s: %s\n", c.name.c_str(), err ? err->message : "no pipeline");
    if (err) g_error_free(err);
    return -1;
  }
  GstElement* sink = gst_bin_get_by_name(GST_BIN(p), "sink");
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GST_PAD_PROBE_TYPE_BUFFER, on_buffer, nullptr, nullptr);
  gst_object_unref(pad);
  gst_object_unref(sink);
  frames = 0;
  control_case = c.control;
  gst_element_set_state(p, GST_STATE_PLAYING);
  GstBus* bus = gst_element_get_bus(p);
  GstMessage* m = gst_bus_timed_pop_filtered(bus, 300 * GST_SECOND, GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  counting = false;
  control_case = false;
  bool ok = m && GST_MESSAGE_TYPE(m) == GST_MESSAGE_EOS;
  if (m && GST_MESSAGE_TYPE(m) == GST_MESSAGE_ERROR) {
    GError* e = nullptr;
    gchar* dbg = nullptr;
    gst_message_parse_error(m, &e, &dbg);
    std::fprintf(stderr, "%s: error: %s (%s)\n", c.name.c_str(), e->message, dbg ? dbg : "");
    g_error_free(e);
    g_free(dbg);
  } else if (!m) {
    std::fprintf(stderr, "%s: no EOS in 300 s\n", c.name.c_str());
  }
  if (m) gst_message_unref(m);
  gst_object_unref(bus);
  gst_element_set_state(p, GST_STATE_NULL);
  gst_object_unref(p);
  *counted = frames.load() - kWarm + 1;
  if (!ok || *counted < kFrames / 2) {
    if (ok) std::fprintf(stderr, "%s: only %d frames reached the sink after warm-up\n", c.name.c_str(), *counted);
    return -1;
  }
  return double(large.load()) / *counted;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: test-steady-alloc FIXTURES_DIR\n");
    return 2;
  }
  {
    void* f[2];
    backtrace(f, 2);  // loads the unwinder now, not inside a counted malloc
  }
  gst_init(&argc, &argv);
  const std::string fixtures = argv[1], model = fixtures + "/mobilenet_v3_small.pth";
  const std::string src = "videotestsrc num-buffers=" + std::to_string(kWarm + kFrames) + " pattern=ball ! ";
  const std::string rgb = "video/x-raw,format=RGB,width=1280,height=720 ! ";
  const std::string infer = "ptminfer model=" + model;
  const std::string sink = " ! fakesink name=sink sync=false";
  const std::vector<Case> cases = {
      {"control: 256 KiB allocated a frame by the test itself", src + rgb + "identity" + sink, true},
      {"ptminfer", src + rgb + infer + sink},
      {"ptminfer share-model=false", src + rgb + infer + " share-model=false" + sink},
      {"ptminfer batch-size=4", src + rgb + infer + " batch-size=4" + sink},
      // resnet18, slower than the source and ptmpreprocess: the queue is
      // full from the first frames on, so the tensors in flight (and the
      // frames) reach their most during warm-up.
      {"ptmpreprocess ! queue ! ptminfer (resnet18)",
       src + rgb + "ptmpreprocess ! queue max-size-buffers=2 ! ptminfer model=" + fixtures + "/resnet18.pth" + sink},
      {"ptminfer ! ptmoverlay (NV12)",
       src + "video/x-raw,format=NV12,width=1280,height=720 ! " + infer + " ! ptmoverlay" + sink},
      {"ptminfer ! ptmoverlay (RGBA 1080p), results file, messages",
       src + "video/x-raw,format=RGBA,width=1920,height=1080 ! " + infer +
           " post-messages=true results-file=/dev/null ! ptmoverlay" + sink},
  };
  int failures = 0;
  for (const Case& c : cases) {
    int counted = 0;
    const double a_frame = run(c, &counted);
    if (a_frame < 0) {
      std::printf("FAIL %-60s did not run\n", c.name.c_str());
      ++failures;
      continue;
    }
    const bool bad = c.control ? a_frame < 0.9 : large.load() > 0;
    std::printf("%s %-60s %d frames: %ld allocations of 64 KiB or more (%.2f a frame, %.1f KiB a frame); "
                "the source's buffer pool grew %ld times\n",
                bad ? "FAIL" : "ok  ", c.name.c_str(), counted, large.load(), a_frame,
                double(large_bytes.load()) / 1024 / counted, pool_growth.load());
    if (bad && c.control) std::printf("     the counter did not see the test's own allocations\n");
    if (bad && !c.control && have_trace.load()) {
      std::printf("     the first (%zu bytes) was made here:\n", trace_bytes);
      std::fflush(stdout);
      backtrace_symbols_fd(trace, trace_depth, STDOUT_FILENO);
    }
    std::fflush(stdout);
    failures += bad;
  }
  return failures ? 1 : 0;
}
