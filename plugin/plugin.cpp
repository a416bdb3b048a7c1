// The gstptm plugin: registration only.
#include <gst/gst.h>

#include "../elements/ptminfer/gstptminfer.h"
#include "../elements/ptmoverlay/gstptmoverlay.h"
#include "../elements/ptmpreprocess/gstptmpreprocess.h"
#include "../elements/ptmtrainsink/gstptmtrainsink.h"

#include <dlfcn.h>
#include <link.h>

#include <cstring>
#include <string>

GST_DEBUG_CATEGORY_STATIC(ptm_plugin_debug);

namespace {

// Two C++ unwinders in one process (libunwind, which GStreamer links, and
// libgcc_s) crash on the first C++ exception when libstdc++ was bound to
// one and this plugin to the other: it happens when libstdc++ was loaded
// before libgstreamer, e.g. `import torch` before `from gi.repository
// import Gst` in Python. Warn so the workaround is known before it bites.
struct LoadOrder {
  int libstdcxx = -1, libunwind = -1, index = 0;
};

int note_object(struct dl_phdr_info* info, size_t, void* data) {
  auto* o = static_cast<LoadOrder*>(data);
  const char* name = info->dlpi_name ? info->dlpi_name : "";
  if (o->libstdcxx < 0 && std::strstr(name, "libstdc++.so")) o->libstdcxx = o->index;
  if (o->libunwind < 0 && std::strstr(name, "libunwind.so")) o->libunwind = o->index;
  ++o->index;
  return 0;
}

void warn_about_mixed_unwinders() {
  void* resume = dlsym(RTLD_DEFAULT, "_Unwind_Resume");
  Dl_info where{};
  if (!resume || !dladdr(resume, &where) || !where.dli_fname || !std::strstr(where.dli_fname, "libunwind"))
    return;  // exceptions unwind with libgcc_s, as libstdc++ does
  LoadOrder order;
  dl_iterate_phdr(note_object, &order);
  if (order.libstdcxx >= 0 && order.libunwind >= 0 && order.libstdcxx < order.libunwind)
    g_warning("ptm: this process loaded libstdc++ before GStreamer's libunwind; a C++ error inside ptm may crash "
              "it. In Python, import gi.repository.Gst before torch (or run with "
              "LD_PRELOAD=libgcc_s.so.1).");
}

}  // namespace

static gboolean plugin_init(GstPlugin* plugin) {
  GST_DEBUG_CATEGORY_INIT(ptm_plugin_debug, "ptm", 0, "ptm plugin");
  warn_about_mixed_unwinders();
  gboolean ok = FALSE;
  ok |= GST_ELEMENT_REGISTER(ptmpreprocess, plugin);
  ok |= GST_ELEMENT_REGISTER(ptminfer, plugin);
  ok |= GST_ELEMENT_REGISTER(ptmoverlay, plugin);
  ok |= GST_ELEMENT_REGISTER(ptmtrainsink, plugin);
  return ok;
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, ptm,
                  "Run PyTorch image classifiers in GStreamer pipelines", plugin_init,
                  PTM_VERSION, "LGPL", "ptm", "https://github.com/ptm")
