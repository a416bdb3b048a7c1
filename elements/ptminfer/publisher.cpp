#include "publisher.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_set>

#if PTM_HAVE_MQTT
#include <mosquitto.h>
#endif

namespace ptm {
namespace {

using Clock = std::chrono::steady_clock;

struct Document {
  std::string topic, payload;
};

// The bounded queue and the accounting every destination shares; the
// subclass's worker thread takes documents from it.
class Queued : public Publisher {
 public:
  explicit Queued(size_t capacity) : capacity_(std::max<size_t>(1, capacity)) {}

  void offer(std::string topic, std::string payload) override {
    {
      std::lock_guard<std::mutex> g(m_);
      ++st_.offered;
      if (finished_) {
        ++st_.dropped;
        return;
      }
      if (queue_.size() >= capacity_) {
        queue_.pop_front();
        ++st_.dropped;
      }
      queue_.push_back({std::move(topic), std::move(payload)});
    }
    wake();
  }

  PublishStats stats() const override {
    std::lock_guard<std::mutex> g(m_);
    PublishStats s = st_;
    s.queued = queue_.size() + in_flight_locked();
    return s;
  }

  void close(int drain_ms) override {
    {
      std::lock_guard<std::mutex> g(m_);
      if (!closing_) {
        closing_ = true;
        deadline_ = Clock::now() + std::chrono::milliseconds(std::max(0, drain_ms));
      }
    }
    wake();
    if (worker_.joinable()) worker_.join();
    std::lock_guard<std::mutex> g(m_);
    finished_ = true;
    st_.dropped += queue_.size();
    queue_.clear();
  }

 protected:
  // Subclasses start the worker in their constructor and call close() in
  // their destructor (the worker uses their members).
  template <typename F>
  void start(F body) {
    worker_ = std::thread(body);
  }
  virtual void wake() { cv_.notify_all(); }
  virtual size_t in_flight_locked() const { return 0; }
  // Under m_: the worker should stop now (close() asked and its drain time
  // is up, or nothing is left to deliver).
  bool done_locked(bool can_deliver) const {
    if (!closing_) return false;
    return queue_.empty() || !can_deliver || Clock::now() >= deadline_;
  }

  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<Document> queue_;
  PublishStats st_;
  bool closing_ = false;
  bool finished_ = false;
  Clock::time_point deadline_;

 private:
  size_t capacity_;
  std::thread worker_;
};

// JSON lines, one document a line, to a file or stdout.
class FilePublisher : public Queued {
 public:
  FilePublisher(const PublishOptions& o, const std::string& path) : Queued(o.queue_size), path_(path) {
    if (path.empty()) {
      f_ = stdout;
    } else {
      f_ = std::fopen(path.c_str(), "w");
      if (!f_) throw std::runtime_error("cannot write '" + path + "': " + std::strerror(errno));
    }
    start([this] { run(); });
  }
  ~FilePublisher() override {
    close(5000);
    if (f_ && f_ != stdout) std::fclose(f_);
  }
  std::string describe() const override { return path_.empty() ? "stdout" : "file " + path_; }

 private:
  void run() {
    std::unique_lock<std::mutex> l(m_);
    for (;;) {
      cv_.wait(l, [&] { return !queue_.empty() || closing_; });
      if (done_locked(true)) return;
      Document d = std::move(queue_.front());
      queue_.pop_front();
      ++writing_;
      l.unlock();
      d.payload += '\n';
      const bool ok = std::fwrite(d.payload.data(), 1, d.payload.size(), f_) == d.payload.size() && std::fflush(f_) == 0;
      const int err = errno;
      l.lock();
      --writing_;
      if (ok) {
        ++st_.delivered;
      } else {
        ++st_.dropped;
        st_.last_error = std::string("write failed: ") + std::strerror(err);
      }
    }
  }
  size_t in_flight_locked() const override { return writing_; }

  std::string path_;
  std::FILE* f_ = nullptr;
  size_t writing_ = 0;
};

#if PTM_HAVE_MQTT
struct MqttUrl {
  bool tls = false;
  std::string host, user, password;
  int port = 0;
};

MqttUrl parse_mqtt_url(const std::string& url) {
  MqttUrl u;
  std::string rest;
  if (url.rfind("mqtt://", 0) == 0) {
    rest = url.substr(7);
  } else {
    u.tls = true;
    rest = url.substr(8);
  }
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    if (slash + 1 != rest.size())
      throw std::invalid_argument("'" + url + "': the topic goes in publish-topic, not in the URL");
    rest.resize(slash);
  }
  const size_t at = rest.rfind('@');
  if (at != std::string::npos) {
    const std::string who = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const size_t colon = who.find(':');
    u.user = who.substr(0, colon);
    if (colon != std::string::npos) u.password = who.substr(colon + 1);
  }
  u.port = u.tls ? 8883 : 1883;
  size_t colon = rest.rfind(':');
  if (!rest.empty() && rest[0] == '[') {  // [IPv6]:port
    const size_t close = rest.find(']');
    if (close == std::string::npos) throw std::invalid_argument("'" + url + "': unterminated [address]");
    u.host = rest.substr(1, close - 1);
    colon = rest.find(':', close);
  } else {
    u.host = rest.substr(0, colon);
  }
  if (colon != std::string::npos) {
    const std::string port = rest.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || p < 1 || p > 65535)
      throw std::invalid_argument("'" + url + "': the port must be a number from 1 to 65535");
    u.port = int(p);
  }
  if (u.host.empty()) throw std::invalid_argument("'" + url + "' names no broker host");
  return u;
}

std::string mosq_error(int rc) {
  if (rc == MOSQ_ERR_ERRNO) return std::strerror(errno);
  return mosquitto_strerror(rc);
}

// One connection to a broker, driven by the worker's own poll loop
// (mosquitto_loop_read/write/misc) so that an eventfd wakes it the moment a
// document is queued. At most `window` documents are handed to libmosquitto
// at a time: its own queue stays bounded, and on a reconnect it sends
// again the QoS 1 documents the broker had not acknowledged.
class MqttPublisher : public Queued {
 public:
  explicit MqttPublisher(const PublishOptions& o) : Queued(o.queue_size), opt_(o), url_(parse_mqtt_url(o.url)) {
    if (o.qos != 0 && o.qos != 1) throw std::invalid_argument("MQTT QoS must be 0 or 1");
    static std::once_flag init;
    std::call_once(init, [] { mosquitto_lib_init(); });
    static std::atomic<int> serial{0};
    const std::string id = o.client_id.empty()
                               ? "ptm-" + std::to_string(getpid()) + "-" + std::to_string(serial++)
                               : o.client_id;
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_fd_ < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
    mosq_ = mosquitto_new(id.c_str(), true, this);
    if (!mosq_) {
      ::close(wake_fd_);
      throw std::runtime_error("cannot make an MQTT client: " + std::string(std::strerror(errno)));
    }
    try {
      configure();
    } catch (...) {
      mosquitto_destroy(mosq_);
      ::close(wake_fd_);
      throw;
    }
    start([this] { run(); });
  }

  ~MqttPublisher() override {
    close(5000);
    mosquitto_destroy(mosq_);
    ::close(wake_fd_);
  }

  std::string describe() const override {
    return std::string(url_.tls ? "MQTT broker (TLS) " : "MQTT broker ") + url_.host + ":" + std::to_string(url_.port);
  }

 private:
  static constexpr size_t kWindow = 64;

  void configure() {
    mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (!url_.user.empty()) {
      const int rc = mosquitto_username_pw_set(mosq_, url_.user.c_str(),
                                               url_.password.empty() ? nullptr : url_.password.c_str());
      if (rc != MOSQ_ERR_SUCCESS) throw std::invalid_argument("MQTT user name: " + mosq_error(rc));
    }
    if (url_.tls) {
      if (opt_.cert_file.empty() != opt_.key_file.empty())
        throw std::invalid_argument("a TLS client certificate needs its key, and the key its certificate");
      const int rc = mosquitto_tls_set(mosq_, opt_.ca_file.empty() ? nullptr : opt_.ca_file.c_str(),
                                       opt_.ca_file.empty() ? "/etc/ssl/certs" : nullptr,
                                       opt_.cert_file.empty() ? nullptr : opt_.cert_file.c_str(),
                                       opt_.key_file.empty() ? nullptr : opt_.key_file.c_str(), nullptr);
      if (rc != MOSQ_ERR_SUCCESS)
        throw std::invalid_argument("TLS settings (CA '" + opt_.ca_file + "', certificate '" + opt_.cert_file +
                                    "', key '" + opt_.key_file + "'): " + mosq_error(rc));
    } else if (!opt_.ca_file.empty() || !opt_.cert_file.empty()) {
      throw std::invalid_argument("TLS files are set but the URL is mqtt://: use mqtts:// for TLS");
    }
    mosquitto_connect_callback_set(mosq_, [](mosquitto*, void* me, int rc) {
      static_cast<MqttPublisher*>(me)->on_connect(rc);
    });
    mosquitto_publish_callback_set(mosq_, [](mosquitto*, void* me, int mid) {
      static_cast<MqttPublisher*>(me)->on_publish(mid);
    });
  }

  void wake() override {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
  size_t in_flight_locked() const override { return in_flight_.size(); }

  void on_connect(int rc) {
    std::lock_guard<std::mutex> g(m_);
    if (rc == 0) {
      session_ = true;
      st_.connected = true;
      ++st_.connects;
      backoff_ms_ = 0;
    } else {
      st_.last_error = std::string("the broker refused the connection: ") + mosquitto_connack_string(rc);
    }
  }

  // QoS 1: the broker's PUBACK; QoS 0: written to the socket.
  void on_publish(int mid) {
    std::lock_guard<std::mutex> g(m_);
    if (in_flight_.erase(mid)) ++st_.delivered;
    else confirmed_early_.insert(mid);  // before mosquitto_publish returned its mid
  }

  // The connection is gone: QoS 0 documents not yet written are lost;
  // QoS 1 ones stay with libmosquitto, which sends them again on reconnect.
  void lost(const std::string& why) {
    std::lock_guard<std::mutex> g(m_);
    session_ = false;
    st_.connected = false;
    st_.last_error = why;
    if (opt_.qos == 0) {
      st_.dropped += in_flight_.size();
      in_flight_.clear();
    }
    backoff_ms_ = backoff_ms_ ? std::min(backoff_ms_ * 2, opt_.reconnect_max_ms) : opt_.reconnect_min_ms;
    retry_at_ = Clock::now() + std::chrono::milliseconds(backoff_ms_);
  }

  // Hands queued documents to libmosquitto while the session is up.
  void pump() {
    for (;;) {
      Document d;
      {
        std::lock_guard<std::mutex> g(m_);
        if (!session_ || queue_.empty() || in_flight_.size() >= kWindow) return;
        d = std::move(queue_.front());
        queue_.pop_front();
      }
      int mid = 0;
      const int rc = mosquitto_publish(mosq_, &mid, d.topic.c_str(), int(d.payload.size()), d.payload.data(),
                                       opt_.qos, false);
      std::lock_guard<std::mutex> g(m_);
      if (rc == MOSQ_ERR_SUCCESS) {
        if (confirmed_early_.erase(mid)) ++st_.delivered;
        else in_flight_.insert(mid);
        continue;
      }
      if (rc == MOSQ_ERR_NO_CONN || rc == MOSQ_ERR_CONN_LOST || rc == MOSQ_ERR_ERRNO) {
        queue_.push_front(std::move(d));  // sent after the reconnect
        return;
      }
      ++st_.dropped;  // e.g. a topic the broker cannot take
      st_.last_error = "could not publish to '" + d.topic + "': " + mosq_error(rc);
    }
  }

  // Whether a TCP connection to the broker opens within 5 s (close() cuts
  // the wait short).
  bool reachable() {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(url_.host.c_str(), std::to_string(url_.port).c_str(), &hints, &found) != 0) return false;
    bool ok = false;
    for (addrinfo* a = found; a && !ok; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        ok = true;
      } else if (errno == EINPROGRESS) {
        pollfd p[2] = {{fd, POLLOUT, 0}, {wake_fd_, POLLIN, 0}};
        int err = 0;
        socklen_t len = sizeof err;
        ok = ::poll(p, 2, 5000) > 0 && (p[0].revents & POLLOUT) &&
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
      }
      ::close(fd);
    }
    freeaddrinfo(found);
    return ok;
  }

  bool connect() {
    int rc = connected_once_ ? mosquitto_reconnect_async(mosq_)
                             : mosquitto_connect_async(mosq_, url_.host.c_str(), url_.port, opt_.keepalive_s);
    // libmosquitto 2.0.21 (Debian 13, OpenSSL 3.5) fails every TLS
    // connection begun asynchronously at once (MOSQ_ERR_TLS, the broker
    // sees the socket closed mid-handshake); its blocking connect works.
    // That one blocks this thread (never the pipeline's) until the broker
    // answers, so it is tried only once the broker is known to be reachable.
    if (rc == MOSQ_ERR_TLS && url_.tls && reachable())
      rc = mosquitto_connect(mosq_, url_.host.c_str(), url_.port, opt_.keepalive_s);
    if (rc == MOSQ_ERR_SUCCESS) {
      connected_once_ = true;
      connecting_since_ = Clock::now();
      return true;
    }
    lost("cannot connect to " + url_.host + ":" + std::to_string(url_.port) + ": " + mosq_error(rc));
    return false;
  }

  void run() {
    bool open = false, tried = false;
    for (;;) {
      bool session;
      Clock::time_point retry_at;
      {
        std::lock_guard<std::mutex> g(m_);
        session = session_;
        retry_at = retry_at_;
        // While closing, what is in flight counts too: a drain waits for
        // acknowledgements, and for a connection still being made (a short
        // stream can end during the TLS handshake) or not yet tried; without
        // one, what is queued is dropped at once.
        const bool coming = open || !tried;
        if (closing_ && (Clock::now() >= deadline_ || (!session && !coming) || (queue_.empty() && in_flight_.empty())))
          break;
      }
      if (!open) {
        if (Clock::now() < retry_at) {
          wait_until(retry_at);
          continue;
        }
        open = connect();
        tried = true;
        continue;
      }
      if (!session && Clock::now() - connecting_since_ > std::chrono::seconds(std::max(5, opt_.keepalive_s))) {
        mosquitto_disconnect(mosq_);
        lost("no answer from " + url_.host + ":" + std::to_string(url_.port) + " within " +
             std::to_string(std::max(5, opt_.keepalive_s)) + " s");
        open = false;
        continue;
      }
      pump();
      const int fd = mosquitto_socket(mosq_);
      if (fd < 0) {
        lost("connection to " + url_.host + ":" + std::to_string(url_.port) + " closed");
        open = false;
        continue;
      }
      pollfd p[2] = {{fd, short(POLLIN | (mosquitto_want_write(mosq_) ? POLLOUT : 0)), 0}, {wake_fd_, POLLIN, 0}};
      ::poll(p, 2, 1000);
      if (p[1].revents & POLLIN) {
        uint64_t n;
        (void)!read(wake_fd_, &n, sizeof n);
      }
      int rc = MOSQ_ERR_SUCCESS;
      if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) rc = mosquitto_loop_read(mosq_, 16);
      if (rc == MOSQ_ERR_SUCCESS && (p[0].revents & POLLOUT)) rc = mosquitto_loop_write(mosq_, 16);
      if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_loop_misc(mosq_);
      if (rc != MOSQ_ERR_SUCCESS) {
        lost("connection to " + url_.host + ":" + std::to_string(url_.port) + " lost: " + mosq_error(rc));
        open = false;
      }
    }
    if (open) {
      mosquitto_disconnect(mosq_);
      mosquitto_loop_write(mosq_, 1);
    }
    std::lock_guard<std::mutex> g(m_);
    session_ = false;
    st_.connected = false;
    st_.dropped += in_flight_.size();  // unacknowledged at the end
    in_flight_.clear();
  }

  // Sleeps until `t`, or until close() wakes the worker.
  void wait_until(Clock::time_point t) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
    pollfd p{wake_fd_, POLLIN, 0};
    if (::poll(&p, 1, int(std::max<long long>(1, ms))) > 0) {
      uint64_t n;
      (void)!read(wake_fd_, &n, sizeof n);
    }
  }

  PublishOptions opt_;
  MqttUrl url_;
  mosquitto* mosq_ = nullptr;
  int wake_fd_ = -1;
  bool connected_once_ = false;
  Clock::time_point connecting_since_;
  // Under m_:
  bool session_ = false;
  std::unordered_set<int> in_flight_, confirmed_early_;
  int backoff_ms_ = 0;
  Clock::time_point retry_at_;
};
#endif

}  // namespace

bool Publisher::have_mqtt() { return PTM_HAVE_MQTT != 0; }

std::unique_ptr<Publisher> Publisher::open(const PublishOptions& o) {
  const std::string& u = o.url;
  if (o.queue_size == 0) throw std::invalid_argument("the publish queue must hold at least one document");
  if (u == "stdout" || u == "-") return std::make_unique<FilePublisher>(o, "");
  if (u.rfind("file://", 0) == 0) {
    const std::string path = u.substr(7);
    if (path.empty()) throw std::invalid_argument("'" + u + "' names no file");
    return std::make_unique<FilePublisher>(o, path);
  }
  if (!u.empty() && u[0] == '/') return std::make_unique<FilePublisher>(o, u);
  if (u.rfind("mqtt://", 0) == 0 || u.rfind("mqtts://", 0) == 0) {
#if PTM_HAVE_MQTT
    return std::make_unique<MqttPublisher>(o);
#else
    throw std::runtime_error("this build has no MQTT client (it was built without libmosquitto-dev)");
#endif
  }
  throw std::invalid_argument("'" + u +
                              "' is not a destination: use mqtt://host[:port], mqtts://host[:port], file:///path or "
                              "stdout");
}

}  // namespace ptm
