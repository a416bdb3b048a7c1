#include "bytes.h"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ptm {

namespace {

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string errno_text(int e) { return std::strerror(e); }

Fd open_regular(const std::string& path, struct stat* st) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0)
    throw ModelError("cannot open '" + path + "': " + errno_text(errno));
  if (::fstat(f.fd, st) != 0)
    throw ModelError("cannot stat '" + path + "': " + errno_text(errno));
  if (S_ISDIR(st->st_mode))
    throw ModelError("'" + path + "' is a directory, not a model file");
  if (!S_ISREG(st->st_mode))
    throw ModelError("'" + path + "' is not a regular file");
  return f;
}

void read_exact(int fd, uint8_t* dst, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::read(fd, dst + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw ModelError("cannot read '" + path + "': " + errno_text(errno));
    }
    if (r == 0) throw ModelError("'" + path + "' shrank while being read");
    done += size_t(r);
  }
}

}  // namespace

std::string_view Bytes::view(size_t offset, size_t length) const {
  if (offset > size || length > size - offset)
    throw ModelError("internal: byte range outside buffer");
  return std::string_view(reinterpret_cast<const char*>(data.get()) + offset, length);
}

Bytes read_file(const std::string& path, uint64_t max_size) {
  struct stat st {};
  Fd f = open_regular(path, &st);
  uint64_t size = uint64_t(st.st_size);
  if (size > max_size)
    throw ModelError("'" + path + "' is " + std::to_string(size) +
                     " bytes, over the limit of " + std::to_string(max_size));
  // Uninitialised storage (the read fills every byte), 64-byte aligned so
  // tensors PyTorch stored at aligned offsets can be used in place.
  const size_t alloc = (size + 63) / 64 * 64 + 64;
  void* raw = std::aligned_alloc(64, alloc);
  if (!raw) throw ModelError("out of memory reading '" + path + "' (" + std::to_string(size) + " bytes)");
  std::shared_ptr<uint8_t> buf(static_cast<uint8_t*>(raw), [](uint8_t* p) { std::free(p); });
  read_exact(f.fd, buf.get(), size, path);
  Bytes b;
  b.data = buf;
  b.size = size;
  return b;
}

Bytes map_file(const std::string& path) {
  struct stat st {};
  Fd f = open_regular(path, &st);
  Bytes b;
  b.size = size_t(st.st_size);
  if (b.size == 0) {
    b.data = std::shared_ptr<const uint8_t>(new uint8_t[1], std::default_delete<uint8_t[]>());
    return b;
  }
  void* p = ::mmap(nullptr, b.size, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (p == MAP_FAILED) throw ModelError("cannot map '" + path + "': " + errno_text(errno));
  const size_t size = b.size;
  b.data = std::shared_ptr<const uint8_t>(static_cast<const uint8_t*>(p),
                                          [size](const uint8_t* q) { ::munmap(const_cast<uint8_t*>(q), size); });
  return b;
}

std::string read_head(const std::string& path, size_t n) {
  struct stat st {};
  Fd f = open_regular(path, &st);
  size_t want = std::min<uint64_t>(n, uint64_t(st.st_size));
  std::string out(want, '\0');
  read_exact(f.fd, reinterpret_cast<uint8_t*>(out.data()), want, path);
  return out;
}

void Cursor::seek(size_t pos) {
  if (pos > n_) fail("offset " + std::to_string(pos) + " is past the end");
  pos_ = pos;
}

const uint8_t* Cursor::take(size_t n) {
  if (n > n_ - pos_)
    fail("needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
         " but only " + std::to_string(n_ - pos_) + " remain (truncated?)");
  const uint8_t* r = p_ + pos_;
  pos_ += n;
  return r;
}

std::string Cursor::line() {
  const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
  if (!nl) fail("unterminated text line at offset " + std::to_string(pos_));
  size_t len = static_cast<const uint8_t*>(nl) - (p_ + pos_);
  std::string s = str(len);
  pos_ += 1;
  return s;
}

void Cursor::fail(const std::string& why) const { throw ModelError(what_ + ": " + why); }

}  // namespace ptm
