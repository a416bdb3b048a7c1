#include "zero_copy_probe.h"

#if PTM_HAVE_CUPTI
#include <cupti.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace ptm::test {
namespace {

std::atomic<uint64_t> h2d{0}, d2h{0}, d2d{0}, other{0};

// The fields every version of CUPTI's memcpy record starts with.
struct MemcpyRecordHead {
  CUpti_ActivityKind kind;
  uint8_t copy_kind, src_kind, dst_kind, flags;
  uint64_t bytes;
};

void CUPTIAPI requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = size_t(1) << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* r = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
    if (r->kind != CUPTI_ACTIVITY_KIND_MEMCPY) continue;
    const auto* m = reinterpret_cast<const MemcpyRecordHead*>(r);
    switch (m->copy_kind) {
      case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: h2d += m->bytes; break;
      case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: d2h += m->bytes; break;
      case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: d2d += m->bytes; break;
      default: other += m->bytes; break;
    }
  }
  std::free(buffer);
}

void check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* s = nullptr;
  cuptiGetResultString(r, &s);
  std::fprintf(stderr, "%s: %s\n", what, s ? s : "?");
  std::abort();
}

}  // namespace

bool zero_copy_probe_available() { return true; }

ZeroCopyProbe::ZeroCopyProbe() {
  h2d = d2h = d2d = other = 0;
  check(cuptiActivityRegisterCallbacks(requested, completed), "cuptiActivityRegisterCallbacks");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "cuptiActivityEnable");
}

ZeroCopyProbe::~ZeroCopyProbe() {
  cuptiActivityFlushAll(0);
  cuptiActivityDisable(CUPTI_ACTIVITY_KIND_MEMCPY);
}

CopyCounts ZeroCopyProbe::counts() {
  check(cuptiActivityFlushAll(0), "cuptiActivityFlushAll");
  return {h2d.load(), d2h.load(), d2d.load(), other.load()};
}

}  // namespace ptm::test

#else

namespace ptm::test {
bool zero_copy_probe_available() { return false; }
ZeroCopyProbe::ZeroCopyProbe() = default;
ZeroCopyProbe::~ZeroCopyProbe() = default;
CopyCounts ZeroCopyProbe::counts() { return {}; }
}  // namespace ptm::test

#endif
