// An immutable, shared byte buffer (a whole file read into memory) and a
// bounds-checked cursor over it. Every reader of untrusted files goes
// through these so that no offset or length escapes the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "error.h"

namespace ptm {

struct Bytes {
  std::shared_ptr<const uint8_t> data;
  size_t size = 0;

  const uint8_t* begin() const { return data.get(); }
  std::string_view view(size_t offset, size_t length) const;
  Bytes slice_keepalive() const { return *this; }
};

// Reads a regular file whole. Errors name the path and the reason
// (missing, a directory, unreadable, larger than `max_size`).
Bytes read_file(const std::string& path, uint64_t max_size = uint64_t(64) << 30);

// Maps a regular file read-only without reading it: pages are read only
// when touched (format sniffing looks at the head and a zip's directory).
Bytes map_file(const std::string& path);

// Reads at most `n` bytes from the start of a file (format sniffing).
std::string read_head(const std::string& path, size_t n);

// True when a + b would overflow, else stores the sum.
inline bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_add_overflow(a, b, out);
}
inline bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n, std::string what)
      : p_(p), n_(n), what_(std::move(what)) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }
  bool at_end() const { return pos_ >= n_; }
  void seek(size_t pos);

  const uint8_t* take(size_t n);
  uint8_t u8() { return *take(1); }
  uint16_t u16() { return load<uint16_t>(); }
  uint32_t u32() { return load<uint32_t>(); }
  uint64_t u64() { return load<uint64_t>(); }
  int32_t i32() { return static_cast<int32_t>(u32()); }
  int64_t i64() { return static_cast<int64_t>(u64()); }
  std::string str(size_t n) {
    const uint8_t* s = take(n);
    return std::string(reinterpret_cast<const char*>(s), n);
  }
  // Text up to (not including) the next '\n', which is consumed.
  std::string line();

  [[noreturn]] void fail(const std::string& why) const;

 private:
  template <typename T>
  T load() {
    // All on-disk integers here are little-endian, as is every host we build for.
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace ptm
