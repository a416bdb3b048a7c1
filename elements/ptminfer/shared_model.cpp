#include "shared_model.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

#include <climits>
#include <cstdlib>

#include "model_slot.h"
#include "models/runtime.h"

namespace ptm {

namespace {

// Images in one forward pass at most when several callers wait (a single
// caller's batch larger than this still runs, alone).
constexpr int64_t kMaxImages = 16;

// models/runtime.h's on_own_thread, rethrowing what `fn` threw.
template <typename F>
void off_thread(F&& fn) {
  std::exception_ptr error;
  runtime::on_own_thread([&] {
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
}

std::string canonical(const std::string& path) {
  if (path.empty()) return path;
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

std::string one_stamp(const std::string& path) {
  const FileStamp f = stamp_of(path);
  return std::to_string(f.dev) + ":" + std::to_string(f.ino) + ":" + std::to_string(f.size) + ":" +
         std::to_string(f.mtime_ns);
}

// The version of a file; of a folder (a hub-style model folder), the
// versions of the files in it too (a file rewritten in place leaves the
// folder's own stamp as it was).
std::string stamp_text(const std::string& path) {
  std::string t = one_stamp(path);
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return t;
  std::vector<std::string> entries;
  for (const auto& e : std::filesystem::directory_iterator(path, ec))
    if (e.is_regular_file(ec)) entries.push_back(e.path().filename().string() + "=" + one_stamp(e.path().string()));
  std::sort(entries.begin(), entries.end());
  for (const std::string& e : entries) t += "," + e;
  return t;
}

// Everything that makes two loaded models differ: the files (by version)
// and every option.
std::string key_of(const ClassifierOptions& o) {
  std::string k;
  auto add = [&k](const std::string& v) {
    k += std::to_string(v.size());
    k += ':';
    k += v;
    k += '|';
  };
  add(canonical(o.model));
  add(stamp_text(o.model));
  add(canonical(o.labels));
  add(o.labels.empty() ? "" : stamp_text(o.labels));
  add(o.architecture);
  add(std::to_string(o.num_classes));
  add(o.wrapper_key);
  add(std::to_string(o.strict));
  add(std::to_string(o.threads));
  add(std::to_string(o.optimize));
  add(o.device);
  add(std::to_string(int(o.precision)));
  add(std::to_string(o.channels_last));
  add(std::to_string(o.cuda_graphs));
  add(std::to_string(o.input_size));
  if (o.precision == Precision::Int8) {  // calibrated on what, a folder by its name
    add(std::to_string(o.calibration_images));
    add(o.calibration.empty() ? "" : canonical(o.calibration));
  }
  return k;
}

struct Entry {
  std::weak_ptr<SharedModel> model;
  std::shared_future<void> loading;  // valid while a load is under way
};

std::mutex registry_lock;
std::map<std::string, Entry> registry;
size_t alive = 0;  // under registry_lock

}  // namespace

struct SharedModel::Impl {
  explicit Impl(const ClassifierOptions& o) : classifier(o) {
    const ModelInfo& m = classifier.info();
    plane = size_t(3) * size_t(m.crop_size) * size_t(m.crop_size);
    cap = m.max_batch > 0 ? std::min<int64_t>(m.max_batch, kMaxImages) : kMaxImages;
  }

  struct Job {
    const float* images;  // nullptr, and no fill: the warm-up pass (Classifier::warm_up)
    int64_t n;
    std::vector<float>* logits;
    bool finished = false;
    std::exception_ptr error;
    const Fill* fill = nullptr;  // writes the images instead (run with a Fill)
  };

  // Runs `jobs` (total images `total`) in one forward pass. Only one
  // thread at a time: the forward thread, or a caller holding `lock` when
  // no thread could be started.
  void execute(const std::vector<Job*>& jobs, int64_t total) {
    try {
      if (jobs.size() == 1 && !jobs[0]->images && !jobs[0]->fill) {
        classifier.warm_up();
        return;
      }
      const Classifier::InputBuffer in = classifier.input_buffer(total);
      const bool in_place = !in.cuda && in.type == Precision::Float32 && !in.channels_last;
      int64_t slot = 0;
      for (Job* j : jobs)
        for (int64_t i = 0; i < j->n; ++i, ++slot) {
          float* dst = static_cast<float*>(in.data) + size_t(slot) * plane;
          if (j->fill && in_place) {
            (*j->fill)(i, dst);  // straight into the model input
            continue;
          }
          const float* image = j->images ? j->images + size_t(i) * plane : nullptr;
          if (j->fill) {
            staging.resize(plane);
            (*j->fill)(i, staging.data());
            image = staging.data();
          }
          if (in_place) std::memcpy(dst, image, plane * sizeof(float));
          else classifier.write_input(slot, image, false);
        }
      classifier.run_input(total, 0, 0, scores, indices);
      const size_t classes = scores.size() / size_t(total);
      size_t at = 0;
      for (Job* j : jobs) {
        j->logits->assign(scores.begin() + long(at * classes), scores.begin() + long((at + size_t(j->n)) * classes));
        at += size_t(j->n);
      }
    } catch (...) {
      for (Job* j : jobs) j->error = std::current_exception();
    }
  }

  // The forward thread: every job waiting, in passes of up to `cap`
  // images, until the instance goes.
  void serve() {
    std::unique_lock<std::mutex> g(lock);
    for (;;) {
      work.wait(g, [this] { return quit || !queue.empty(); });
      if (queue.empty()) return;  // quitting
      std::vector<Job*> jobs;
      int64_t total = 0;
      while (!queue.empty() && (jobs.empty() || total + queue.front()->n <= cap)) {
        total += queue.front()->n;
        jobs.push_back(queue.front());
        queue.pop_front();
      }
      g.unlock();
      execute(jobs, total);
      g.lock();
      finish(jobs, total);
    }
  }

  void finish(const std::vector<Job*>& jobs, int64_t total) {
    for (Job* j : jobs) j->finished = true;
    ++counts.passes;
    counts.images += uint64_t(total);
    done.notify_all();
  }

  Classifier classifier;
  size_t plane = 0;
  int64_t cap = kMaxImages;
  std::vector<float> scores, staging;
  std::vector<int64_t> indices;

  std::mutex lock;
  std::condition_variable work, done;
  std::deque<Job*> queue;
  std::thread worker;  // not joinable: no thread could be started, callers run their own
  bool quit = false;
  Counts counts;
};

SharedModel::SharedModel(const ClassifierOptions& options) {
  off_thread([&] { impl_ = std::make_unique<Impl>(options); });
  // The forward thread lives with the instance, its OpenMP team and
  // LibTorch's per-thread state (oneDNN's scratchpad, ...) made by one
  // pass on a blank image now, while loading: not on the first frame, and
  // not where memory may have run short by then (oneDNN dereferences a
  // failed allocation of its per-thread state).
  Impl& im = *impl_;
  try {
    im.worker = std::thread([&im] { im.serve(); });
  } catch (const std::system_error&) {
  }
  try {
    std::vector<float> logits;
    run(nullptr, 1, logits);  // the warm-up pass
  } catch (...) {
    stop_worker();  // no destructor for an instance not made
    throw;
  }
  {
    std::lock_guard<std::mutex> g(im.lock);
    im.counts = Counts();
  }
  std::lock_guard<std::mutex> g(registry_lock);
  ++alive;
}

void SharedModel::stop_worker() {
  {
    std::lock_guard<std::mutex> g(impl_->lock);
    impl_->quit = true;
    impl_->work.notify_all();
  }
  if (impl_->worker.joinable()) impl_->worker.join();
}

SharedModel::~SharedModel() {
  stop_worker();
  impl_.reset();
  std::lock_guard<std::mutex> g(registry_lock);
  --alive;
}

std::shared_ptr<SharedModel> SharedModel::load(const ClassifierOptions& options) {
  return std::shared_ptr<SharedModel>(new SharedModel(options));
}

std::shared_ptr<SharedModel> SharedModel::get(const ClassifierOptions& options, bool* existing) {
  const std::string key = key_of(options);
  std::unique_lock<std::mutex> g(registry_lock);
  for (;;) {
    // Entries of instances gone are dropped on the way.
    for (auto it = registry.begin(); it != registry.end();)
      it = it->second.model.expired() && !it->second.loading.valid() && it->first != key ? registry.erase(it)
                                                                                          : std::next(it);
    Entry& e = registry[key];
    if (std::shared_ptr<SharedModel> m = e.model.lock()) {
      if (existing) *existing = true;
      return m;
    }
    if (!e.loading.valid()) break;
    // Another caller is loading it: wait, then take it (or, when that
    // load failed, try ourselves).
    std::shared_future<void> f = e.loading;
    g.unlock();
    f.wait();
    g.lock();
  }
  std::promise<void> loaded;
  registry[key].loading = loaded.get_future().share();
  g.unlock();
  std::shared_ptr<SharedModel> m;
  std::exception_ptr error;
  try {
    m = load(options);
  } catch (...) {
    error = std::current_exception();
  }
  g.lock();
  Entry& e = registry[key];
  e.loading = {};
  if (m) e.model = m;
  else registry.erase(key);
  g.unlock();
  loaded.set_value();
  if (error) std::rethrow_exception(error);
  if (existing) *existing = false;
  return m;
}

size_t SharedModel::instances() {
  std::lock_guard<std::mutex> g(registry_lock);
  return alive;
}

const ModelInfo& SharedModel::info() const { return impl_->classifier.info(); }

const std::string& SharedModel::label(int64_t index) const { return impl_->classifier.label(index); }

std::string SharedModel::int8_status() const { return impl_->classifier.int8_status(); }

SharedModel::Counts SharedModel::counts() const {
  std::lock_guard<std::mutex> g(impl_->lock);
  return impl_->counts;
}

void SharedModel::run(const float* images, int64_t n, std::vector<float>& logits) { submit(images, nullptr, n, logits); }

void SharedModel::run(const Fill& fill, int64_t n, std::vector<float>& logits) { submit(nullptr, &fill, n, logits); }

void SharedModel::submit(const float* images, const Fill* fill, int64_t n, std::vector<float>& logits) {
  if (n <= 0) {
    logits.clear();
    return;
  }
  Impl& im = *impl_;
  Impl::Job job{images, n, &logits, false, nullptr, fill};
  std::unique_lock<std::mutex> g(im.lock);
  if (!im.worker.joinable()) {
    // No thread could be started (thread or address-space limits): each
    // caller runs its own images, the others wait for the lock meanwhile.
    const std::vector<Impl::Job*> jobs{&job};
    im.execute(jobs, n);
    im.finish(jobs, n);
  } else {
    im.queue.push_back(&job);
    im.work.notify_one();
    im.done.wait(g, [&job] { return job.finished; });
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace ptm
