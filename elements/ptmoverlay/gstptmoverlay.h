#pragma once

#include <gst/video/gstvideofilter.h>

G_BEGIN_DECLS

#define GST_TYPE_PTM_OVERLAY (gst_ptm_overlay_get_type())
G_DECLARE_FINAL_TYPE(GstPtmOverlay, gst_ptm_overlay, GST, PTM_OVERLAY, GstVideoFilter)

GST_ELEMENT_REGISTER_DECLARE(ptmoverlay);

G_END_DECLS
