// Live model replacement without GStreamer: a loader thread loads requested
// models in the background while the current one keeps serving; the
// streaming side takes a loaded model between two frames and never waits
// for a load. Also the file identity that tells a replaced model file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "models/error.h"

namespace ptm {

// Identity of a file: device, inode, size and modification time. All zero
// for a file that cannot be read.
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
  }
  bool operator!=(const FileStamp& o) const { return !(*this == o); }
};
FileStamp stamp_of(const std::string& path);

// Notices that a watched file was replaced (a new non-empty version), looking
// at most once per `period_us`. Thread-safe.
class FileWatch {
 public:
  explicit FileWatch(int64_t period_us = 500000) : period_us_(period_us) {}
  // Watches `path` from now on; its current version counts as seen.
  void watch(const std::string& path);
  // The version of `path` about to be read, when `path` is the watched file.
  void reading(const std::string& path);
  // True once per new version of `path` (the watched file), checked when
  // `now_us` is a period past the last check.
  bool changed(const std::string& path, int64_t now_us);

 private:
  std::mutex lock_;
  int64_t period_us_;
  std::string path_;
  FileStamp seen_;
  int64_t last_check_us_ = INT64_MIN / 2;
};

// `Load` makes a Model from a Request (throwing std::exception on failure);
// `Describe` reads what the report tells of a model just loaded, on the
// loader thread, before the model can be taken (once taken, the streaming
// side changes it: the report never sees the model itself); `Report` hears
// of each finished load on the loader thread, without the slot's lock,
// once the model can be taken (its Note, or nullptr and the error), unless
// the slot is stopping.
template <typename Model, typename Request, typename Note>
class ModelSlot {
 public:
  using Load = std::function<std::unique_ptr<Model>(const Request&)>;
  using Describe = std::function<Note(const Model&)>;
  using Report = std::function<void(const Request&, const Note* loaded, const std::string& error)>;

  ModelSlot(Load load, Describe describe, Report report)
      : load_(std::move(load)), describe_(std::move(describe)), report_(std::move(report)) {}
  ~ModelSlot() { stop(); }
  ModelSlot(const ModelSlot&) = delete;
  ModelSlot& operator=(const ModelSlot&) = delete;

  // Asks for a model; returns at once. A request not yet loading is
  // replaced by the newer one. The loader thread lives while there is
  // something to load: a thread that has used LibTorch keeps an OpenMP team
  // while it lives, and idle teams beyond the cores make every team's
  // threads sleep between parallel regions instead of spinning (libgomp's
  // throttling), which slowed the streaming thread's forward pass by ~25 %.
  // Returns "" or, where no thread can be started (address space or
  // thread limits reached), why the request was dropped (not reported: the
  // caller may hold locks a report's handlers take).
  std::string request(Request r) {
    std::thread finished;
    std::string error;
    {
      std::lock_guard<std::mutex> g(lock_);
      request_ = std::move(r);
      if (running_) return "";  // the loader takes it after its current load
      finished = std::move(thread_);
      try {
        thread_ = std::thread([this] { run(); });
        running_ = true;
      } catch (const std::system_error& e) {
        error = std::string("cannot start a thread to load it: ") + e.what();
        request_.reset();
      }
    }
    if (finished.joinable()) finished.join();  // done with its last load, exiting
    return error;
  }

  // The model loaded since the last call (the newest when several were),
  // or nullptr. Never waits for a load.
  std::shared_ptr<Model> take() {
    std::lock_guard<std::mutex> g(lock_);
    return std::move(loaded_);
  }

  // True while a request waits or loads (for tests and diagnostics).
  bool busy() {
    std::lock_guard<std::mutex> g(lock_);
    return request_.has_value() || loading_;
  }

  // Drops waiting requests and a loaded model not taken, waits for a load
  // in progress (its result is dropped, unreported); the slot can be used
  // again afterwards.
  void stop() {
    std::thread t;
    {
      std::lock_guard<std::mutex> g(lock_);
      quit_ = true;
      request_.reset();
      t = std::move(thread_);
    }
    if (t.joinable()) t.join();
    std::lock_guard<std::mutex> g(lock_);
    quit_ = false;
    request_.reset();  // one made while stopping
    loaded_.reset();
  }

 private:
  // Loads requests until none is left (or the slot stops), then ends.
  void run() {
    std::unique_lock<std::mutex> g(lock_);
    for (;;) {
      if (quit_ || !request_.has_value()) {
        running_ = false;
        return;
      }
      const Request r = std::move(*request_);
      request_.reset();
      loading_ = true;
      g.unlock();
      std::unique_ptr<Model> model;
      std::optional<Note> note;
      std::string error;
      try {
        model = load_(r);
        if (!model) error = "the loader returned no model";
        else note.emplace(describe_(*model));
      } catch (const std::exception& e) {
        error = error_text(e);
      } catch (...) {
        error = "unknown exception";
      }
      if (!error.empty()) model.reset();
      g.lock();
      loading_ = false;
      if (quit_) {  // stopping: the result is not wanted
        running_ = false;
        return;
      }
      if (model) loaded_ = std::move(model);  // replaces one loaded but not yet taken
      // Reported without the lock (the report may call back, e.g. through a
      // synchronous bus handler), once the model can be taken.
      g.unlock();
      report_(r, note ? &*note : nullptr, error);
      g.lock();
    }
  }

  Load load_;
  Describe describe_;
  Report report_;
  std::mutex lock_;
  std::thread thread_;
  std::optional<Request> request_;
  std::shared_ptr<Model> loaded_;
  bool running_ = false;  // the loader thread has not finished
  bool loading_ = false;
  bool quit_ = false;
};

}  // namespace ptm
