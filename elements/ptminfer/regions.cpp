#include "regions.h"

#include <algorithm>

#if PTM_HAVE_ANALYTICS
#include <gst/analytics/analytics.h>
#endif

namespace ptm {

std::vector<RegionResult> regions_of(GstBuffer* buf, const GstVideoInfo& info, const std::string& object_class,
                                     int min_size) {
  std::vector<std::string> wanted;
  if (!object_class.empty()) {
    gchar** parts = g_strsplit(object_class.c_str(), ",", -1);
    for (gchar** p = parts; *p; ++p) {
      g_strstrip(*p);
      if (**p) wanted.emplace_back(*p);
    }
    g_strfreev(parts);
  }
  std::vector<RegionResult> out;
  const gint64 fw = GST_VIDEO_INFO_WIDTH(&info), fh = GST_VIDEO_INFO_HEIGHT(&info);
  auto add = [&](gint64 x, gint64 y, gint64 w, gint64 h, const char* type, void* roi, int od_id, gint64 track) {
    const gint64 x0 = CLAMP(x, 0, fw), y0 = CLAMP(y, 0, fh);
    const gint64 x1 = CLAMP(x + std::max<gint64>(w, 0), 0, fw), y1 = CLAMP(y + std::max<gint64>(h, 0), 0, fh);
    RegionResult r;
    r.box = {int(x0), int(y0), int(x1 - x0), int(y1 - y0)};
    r.type = type ? type : "";
    r.roi = roi;
    r.od_id = od_id;
    r.track_id = track;
    for (RegionResult& o : out) {
      if (o.box.x == r.box.x && o.box.y == r.box.y && o.box.width == r.box.width && o.box.height == r.box.height &&
          o.type == r.type) {
        if (od_id >= 0) o.od_id = od_id;
        if (track >= 0) o.track_id = track;
        return;
      }
    }
    if (r.box.width < std::max(1, min_size) || r.box.height < std::max(1, min_size)) return;
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), r.type) == wanted.end()) return;
    out.push_back(std::move(r));
  };
  gpointer state = nullptr;
  while (GstMeta* m = gst_buffer_iterate_meta_filtered(buf, &state, GST_VIDEO_REGION_OF_INTEREST_META_API_TYPE)) {
    auto* roi = reinterpret_cast<GstVideoRegionOfInterestMeta*>(m);
    add(roi->x, roi->y, roi->w, roi->h, g_quark_to_string(roi->roi_type), roi, -1, -1);
  }
#if PTM_HAVE_ANALYTICS
  if (GstAnalyticsRelationMeta* rm = gst_buffer_get_analytics_relation_meta(buf)) {
    gpointer it = nullptr;
    GstAnalyticsMtd mtd;
    while (gst_analytics_relation_meta_iterate(rm, &it, gst_analytics_od_mtd_get_mtd_type(), &mtd)) {
      gint x = 0, y = 0, w = 0, h = 0;
      gfloat conf = 0;
      if (!gst_analytics_od_mtd_get_location(&mtd, &x, &y, &w, &h, &conf)) continue;
      gint64 track = -1;
      GstAnalyticsMtd trk;
      guint64 id = 0;
      if (gst_analytics_relation_meta_get_direct_related(rm, mtd.id, GST_ANALYTICS_REL_TYPE_ANY,
                                                         gst_analytics_tracking_mtd_get_mtd_type(), nullptr, &trk) &&
          gst_analytics_tracking_mtd_get_info(&trk, &id, nullptr, nullptr, nullptr))
        track = gint64(id & G_MAXINT64);
      add(x, y, w, h, g_quark_to_string(gst_analytics_od_mtd_get_obj_type(&mtd)), nullptr, int(mtd.id), track);
    }
  }
#endif
  return out;
}

}  // namespace ptm
