// The gstptm plugin: registration only. Elements register here as they land.
#include <gst/gst.h>

static gboolean plugin_init(GstPlugin* plugin) {
  (void)plugin;
  return TRUE;
}

GST_PLUGIN_DEFINE(GST_VERSION_MAJOR, GST_VERSION_MINOR, ptm,
                  "Run PyTorch image classifiers in GStreamer pipelines", plugin_init,
                  PTM_VERSION, "LGPL", "ptm", "https://github.com/ptm")
