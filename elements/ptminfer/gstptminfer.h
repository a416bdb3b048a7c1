#pragma once

#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

#define GST_TYPE_PTM_INFER (gst_ptm_infer_get_type())
G_DECLARE_FINAL_TYPE(GstPtmInfer, gst_ptm_infer, GST, PTM_INFER, GstBaseTransform)

GST_ELEMENT_REGISTER_DECLARE(ptminfer);

G_END_DECLS
