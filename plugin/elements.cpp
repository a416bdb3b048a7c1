// The ptm elements' library, loaded by the plugin module (plugin.c), which
// calls ptm_register_elements from its plugin_init.
#include <gst/gst.h>

#include "../elements/ptminfer/gstptminfer.h"
#include "../elements/ptmoverlay/gstptmoverlay.h"
#include "../elements/ptmpreprocess/gstptmpreprocess.h"
#include "../elements/ptmtrainsink/gstptmtrainsink.h"

GST_DEBUG_CATEGORY_STATIC(ptm_plugin_debug);

extern "C" __attribute__((visibility("default"))) gboolean ptm_register_elements(GstPlugin* plugin) {
  GST_DEBUG_CATEGORY_INIT(ptm_plugin_debug, "ptm", 0, "ptm plugin");
  gboolean ok = FALSE;
  ok |= GST_ELEMENT_REGISTER(ptmpreprocess, plugin);
  ok |= GST_ELEMENT_REGISTER(ptminfer, plugin);
  ok |= GST_ELEMENT_REGISTER(ptmoverlay, plugin);
  ok |= GST_ELEMENT_REGISTER(ptmtrainsink, plugin);
  return ok;
}
