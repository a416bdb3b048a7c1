#pragma once

#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

#define GST_TYPE_PTM_PREPROCESS (gst_ptm_preprocess_get_type())
G_DECLARE_FINAL_TYPE(GstPtmPreprocess, gst_ptm_preprocess, GST, PTM_PREPROCESS, GstBaseTransform)

GST_ELEMENT_REGISTER_DECLARE(ptmpreprocess);

G_END_DECLS
