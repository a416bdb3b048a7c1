#include "model_slot.h"

#include <sys/stat.h>

namespace ptm {

FileStamp stamp_of(const std::string& path) {
  struct stat st {};
  FileStamp f;
  if (::stat(path.c_str(), &st) == 0) {
    f.dev = st.st_dev;
    f.ino = st.st_ino;
    f.size = st.st_size;
    f.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  }
  return f;
}

void FileWatch::watch(const std::string& path) {
  const FileStamp now = stamp_of(path);
  std::lock_guard<std::mutex> g(lock_);
  path_ = path;
  seen_ = now;
}

void FileWatch::reading(const std::string& path) {
  const FileStamp now = stamp_of(path);
  std::lock_guard<std::mutex> g(lock_);
  if (path == path_) seen_ = now;
}

bool FileWatch::changed(const std::string& path, int64_t now_us) {
  {
    std::lock_guard<std::mutex> g(lock_);
    if (now_us - last_check_us_ < period_us_) return false;
    last_check_us_ = now_us;
    if (path != path_) return false;  // a model set while playing is watched from its request on
  }
  const FileStamp current = stamp_of(path);
  std::lock_guard<std::mutex> g(lock_);
  // An empty file is a replacement in progress (written in place).
  if (path != path_ || current == seen_ || current.size == 0) return false;
  seen_ = current;
  return true;
}

}  // namespace ptm
