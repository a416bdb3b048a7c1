// Counts the bytes CUDA copies between host and device while it lives
// (CUPTI's activity records), for the zero-copy test. Without CUPTI at
// build time it is not available and counts nothing.
#pragma once

#include <cstdint>

namespace ptm::test {

struct CopyCounts {
  uint64_t host_to_device = 0, device_to_host = 0, device_to_device = 0, other = 0;
};

bool zero_copy_probe_available();

class ZeroCopyProbe {
 public:
  ZeroCopyProbe();   // starts counting
  ~ZeroCopyProbe();  // stops
  CopyCounts counts();  // flushes CUPTI's buffers, then reads
};

}  // namespace ptm::test
