// The regions a frame carries for ptminfer's inference-region=roi-list.
#pragma once

#include <gst/video/video.h>

#include <string>
#include <vector>

#include "infer_core.h"

namespace ptm {

// Its GstVideoRegionOfInterestMeta and (GStreamer >= 1.24) GstAnalyticsODMtd
// boxes, clipped to the frame, of the `object_class` types (comma-separated;
// empty: all), at least `min_size` pixels a side; a box both describe counts
// once (its ROI meta and ODMtd id both kept). An ODMtd related to a
// GstAnalyticsTrackingMtd gives the region its tracking id.
std::vector<RegionResult> regions_of(GstBuffer* buf, const GstVideoInfo& info, const std::string& object_class,
                                     int min_size);

}  // namespace ptm
