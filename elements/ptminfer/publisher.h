// Results leaving the process: JSON documents sent to an MQTT broker
// (libmosquitto) or written to a file or stdout. GStreamer-free. The caller
// only ever queues: a worker thread sends, reconnects with backoff and
// accounts for every document, so the streaming thread never waits on the
// network or the disk.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace ptm {

struct PublishOptions {
  // mqtt://[user[:password]@]host[:port] (port 1883), mqtts://... (TLS, port
  // 8883), file://PATH or a plain absolute path (JSON lines, truncated at
  // open), stdout (or "-").
  std::string url;
  int qos = 1;              // MQTT QoS: 0 (at most once) or 1 (at least once)
  size_t queue_size = 1000; // documents held while the destination is away or slow
  std::string client_id;    // MQTT client id; empty: "ptm-<pid>-<n>"
  // TLS (mqtts://): the CA that signed the broker's certificate (empty: the
  // system's CA store), and a client certificate and key for brokers that
  // ask for one.
  std::string ca_file, cert_file, key_file;
  int keepalive_s = 10;
  int reconnect_min_ms = 250, reconnect_max_ms = 8000;  // backoff, doubling
};

// Every document offered ends up in exactly one of delivered, dropped or
// queued. With QoS 1 "delivered" means acknowledged by the broker; with
// QoS 0 and files, written out (QoS 0 gives no receipt: a broker that dies
// may still lose what was written to it).
struct PublishStats {
  uint64_t offered = 0;
  uint64_t delivered = 0;
  uint64_t dropped = 0;   // queue full (the oldest goes), unsent at close, QoS 0 unsent at a disconnect, write errors
  uint64_t queued = 0;    // waiting or in flight now
  uint64_t connects = 0;  // connections made (the first and each reconnect)
  bool connected = false;
  std::string last_error;  // why the destination was last unavailable; "" when it never was
};

class Publisher {
 public:
  // Throws std::invalid_argument for a URL or option it cannot use, and
  // std::runtime_error when a file cannot be opened or this build has no
  // MQTT client. An unreachable broker is not an error: it is retried.
  static std::unique_ptr<Publisher> open(const PublishOptions& o);
  // Whether this build can publish to MQTT brokers (libmosquitto).
  static bool have_mqtt();
  virtual ~Publisher() = default;

  // Never blocks. When the queue is full the oldest waiting document is
  // dropped (the newest results are worth the most to a live consumer).
  virtual void offer(std::string topic, std::string payload) = 0;
  virtual PublishStats stats() const = 0;
  // Stops the worker after up to `drain_ms` spent delivering what is
  // queued (only while the destination is reachable); whatever is left is
  // counted as dropped. Idempotent; the stats stay readable.
  virtual void close(int drain_ms) = 0;
  // Where documents go, for messages: "MQTT broker host:port", "file PATH", "stdout".
  virtual std::string describe() const = 0;
};

}  // namespace ptm
