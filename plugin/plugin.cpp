// The gstptm plugin: registration only.
#include <gst/gst.h>

#include "../elements/ptminfer/gstptminfer.h"
#include "../elements/ptmoverlay/gstptmoverlay.h"
#include "../elements/ptmpreprocess/gstptmpreprocess.h"
#include "../elements/ptmtrainsink/gstptmtrainsink.h"

static gboolean plugin_init(GstPlugin* plugin) {
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
