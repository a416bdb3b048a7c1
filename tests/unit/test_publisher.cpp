// ptminfer's publisher (publisher.h) without GStreamer or a broker: the
// queue's bound and its accounting, JSON lines to a file, refused
// destinations. The element test (tests/elements/test_publish.py) runs it
// against a real broker.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "publisher.h"

namespace ptm::test {
namespace {

// A loopback port nothing listens on (bound, then released).
int closed_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  close(fd);
  return ntohs(a.sin_port);
}

// A loopback "broker" that takes TCP connections (the kernel's backlog) and
// never answers them; closed when it goes.
struct SilentBroker {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int port = 0;
  SilentBroker() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd, 8);
    socklen_t n = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
    port = ntohs(a.sin_port);
  }
  ~SilentBroker() { close(fd); }
};

// Runs `fn` on a thread of its own; whether it returned within `seconds`. A
// liveness check, not a speed one: `seconds` is far longer than `fn` takes
// on any machine unless it waits on something that never comes. The thread
// is joined either way (a call that never returns ends in meson's timeout,
// this check's failure printed before it).
template <typename Fn>
bool returns_within(int seconds, Fn fn) {
  std::promise<void> done;
  std::future<void> f = done.get_future();
  std::thread t([&] {
    fn();
    done.set_value();
  });
  const bool in_time = f.wait_for(std::chrono::seconds(seconds)) == std::future_status::ready;
  if (!in_time) ADD_FAILURE() << "still waiting after " << seconds << " s";
  t.join();
  return in_time;
}

TEST(Publisher, NoBrokerKeepsTheNewestAndCountsTheRest) {
  if (!Publisher::have_mqtt()) GTEST_FAIL() << "this build has no MQTT client: install libmosquitto-dev";
  PublishOptions o;
  o.url = "mqtt://127.0.0.1:" + std::to_string(closed_port());
  o.queue_size = 4;
  auto pub = Publisher::open(o);
  for (int i = 0; i < 10; ++i) pub->offer("t", std::to_string(i));
  PublishStats s = pub->stats();
  EXPECT_EQ(s.offered, 10u);
  EXPECT_EQ(s.dropped, 6u);
  EXPECT_EQ(s.queued, 4u);
  EXPECT_EQ(s.delivered, 0u);
  // The connection is refused, retried, and the reason kept.
  for (int i = 0; i < 100 && pub->stats().last_error.empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  s = pub->stats();
  EXPECT_FALSE(s.connected);
  EXPECT_NE(s.last_error.find("127.0.0.1"), std::string::npos) << s.last_error;
  // close() without a broker does not wait out its drain time (60 s).
  EXPECT_TRUE(returns_within(30, [&] { pub->close(60000); })) << "close() waited for a broker that is not there";
  s = pub->stats();
  EXPECT_EQ(s.dropped, 10u);
  EXPECT_EQ(s.queued, 0u);
  pub->offer("t", "late");  // after close: counted, not kept
  EXPECT_EQ(pub->stats().dropped, 11u);
}

TEST(Publisher, OfferNeverWaitsOnASilentBroker) {
  if (!Publisher::have_mqtt()) GTEST_FAIL() << "this build has no MQTT client: install libmosquitto-dev";
  // The TCP connection opens and the broker never acknowledges it: an
  // offer() that waited on the connection would wait for good.
  auto broker = std::make_unique<SilentBroker>();
  PublishOptions o;
  o.url = "mqtt://127.0.0.1:" + std::to_string(broker->port);
  o.queue_size = 4;
  auto pub = Publisher::open(o);
  EXPECT_TRUE(returns_within(30, [&] {
    for (int i = 0; i < 10; ++i) pub->offer("t", std::to_string(i));
  })) << "offer() waited on a broker that never answers";
  PublishStats s = pub->stats();
  EXPECT_EQ(s.offered, 10u);
  EXPECT_EQ(s.dropped, 6u);
  EXPECT_EQ(s.queued, 4u);
  EXPECT_EQ(s.delivered, 0u);
  EXPECT_FALSE(s.connected);
  // close() waits for the connection being made only as long as an answer
  // may take (keepalive, 10 s), not its 60 s drain time; the four queued
  // documents are then dropped.
  EXPECT_TRUE(returns_within(30, [&] { pub->close(60000); })) << "close() waited on a broker that never answers";
  s = pub->stats();
  EXPECT_EQ(s.queued, 0u);
  EXPECT_EQ(s.dropped, 10u);
  EXPECT_EQ(s.delivered, 0u);
}

TEST(Publisher, FileGetsOneLinePerDocumentInOrder) {
  const std::string path = ::testing::TempDir() + "/ptm-publisher-test.jsonl";
  PublishOptions o;
  o.url = "file://" + path;
  o.queue_size = 1000;
  auto pub = Publisher::open(o);
  for (int i = 0; i < 500; ++i) pub->offer("", "{\"frame\":" + std::to_string(i) + "}");
  pub->close(5000);
  const PublishStats s = pub->stats();
  EXPECT_EQ(s.offered, 500u);
  EXPECT_EQ(s.delivered, 500u);
  EXPECT_EQ(s.dropped, 0u);
  std::ifstream f(path);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) EXPECT_EQ(line, "{\"frame\":" + std::to_string(n++) + "}");
  EXPECT_EQ(n, 500);
  std::remove(path.c_str());
}

TEST(Publisher, RefusesWhatItCannotUse) {
  auto refused = [](const std::string& url, const char* words, PublishOptions o = {}) {
    o.url = url;
    try {
      Publisher::open(o);
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << url << ": " << e.what();
      return;
    }
    ADD_FAILURE() << url << " was accepted";
  };
  refused("ftp://x", "not a destination");
  refused("file://", "names no file");
  refused("/nonexistent-dir/x.jsonl", "nonexistent-dir");
  refused("mqtt://", "no broker host");
  refused("mqtt://h:0", "port");
  refused("mqtt://h:12x", "port");
  refused("mqtt://h/topic", "publish-topic");
  PublishOptions qos;
  qos.qos = 2;
  refused("mqtt://h", "QoS", qos);
  PublishOptions tls;
  tls.ca_file = "/etc/hostname";
  refused("mqtt://h", "mqtts://", tls);
  PublishOptions half;
  half.cert_file = "/etc/hostname";
  refused("mqtts://h", "certificate needs its key", half);
}

}  // namespace
void register_dynamic_tests() {}
}  // namespace ptm::test
