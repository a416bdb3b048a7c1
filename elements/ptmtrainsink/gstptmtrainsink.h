#pragma once

#include <gst/base/gstbasesink.h>

G_BEGIN_DECLS

#define GST_TYPE_PTM_TRAIN_SINK (gst_ptm_train_sink_get_type())
G_DECLARE_FINAL_TYPE(GstPtmTrainSink, gst_ptm_train_sink, GST, PTM_TRAIN_SINK, GstBaseSink)

GST_ELEMENT_REGISTER_DECLARE(ptmtrainsink);

G_END_DECLS
