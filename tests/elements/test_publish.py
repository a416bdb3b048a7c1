#!/usr/bin/env python3
"""ptminfer publish=: results as JSON documents to a real MQTT broker
(Debian's mosquitto, started here on a free loopback port), to a file and
to stdout.

- 1000 frames at 60 fps, QoS 1, the broker stopped after frame 250 and
  started again 2 s later (its persistence keeps the subscriber's session),
  twice: with the default queue all 1000 arrive; with a queue of 100
  every document offered is delivered, dropped or queued, and the count
  of frames the subscriber never received equals stats' publish-dropped
  exactly; every frame from the reconnect on arrives; a warning says
  results are being dropped (the frame rate while the broker is down and
  the longest gap between buffers are printed, not asserted: timings of a
  shared machine).
- No buffer waits on the broker: with the broker frozen (SIGSTOP: its
  connections stay open and nothing answers) from frame 50 of 600 run as
  fast as they go, the stream reaches its end while the broker is still
  frozen (a publisher the streaming thread waited on would hang there;
  the deadline only catches that hang), every document is counted as
  delivered, dropped or queued, and after the broker resumes and the
  pipeline stops nothing is left queued.
- TLS (mqtts://, a CA and server certificate made here with openssl).
- file:// and stdout, one document per frame or per region; the topic
  template; bad destinations fail at start with a message naming them.

    test_publish.py FIXTURES_DIR WORK_DIR
"""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo  # noqa: E402

from checks import check, failures  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1:port with persistence in `work` (a restart
    keeps sessions and their queued messages)."""

    def __init__(self, work, port, tls=None):
        self.work, self.port = work, port
        self.conf = os.path.join(work, "mosquitto.conf")
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {work}/", "max_queued_messages 0", "max_inflight_messages 0",
                 f"log_dest file {work}/mosquitto.log"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to user mosquitto, who cannot read the files made here
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("mosquitto exited at start (see %s/mosquitto.log)" % self.work)
                time.sleep(0.05)
        raise RuntimeError("mosquitto does not listen on port %d" % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # saves the persistent sessions
            self.proc.wait(10)


def encode_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def encode_len(n):
    out = bytearray()
    while True:
        d, n = n % 128, n // 128
        out.append(d | (0x80 if n else 0))
        if not n:
            return bytes(out)


class Subscriber(threading.Thread):
    """A minimal MQTT 3.1.1 subscriber (QoS 1, persistent session) that
    reconnects on its own: collects (topic, payload) of every PUBLISH."""

    def __init__(self, port, topic, client_id, ssl_context=None):
        super().__init__(daemon=True)
        self.port, self.topic, self.client_id, self.ssl = port, topic, client_id, ssl_context
        self.messages = []
        self.subscribed = threading.Event()
        self.stopping = False
        self.lock = threading.Lock()

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        if self.ssl:
            s = self.ssl.wrap_socket(s, server_hostname="localhost")
        var = encode_str("MQTT") + bytes([4, 0x00, 0, 60])  # clean session off: the broker keeps our queue
        body = var + encode_str(self.client_id)
        s.sendall(bytes([0x10]) + encode_len(len(body)) + body)
        sub = struct.pack("!H", 1) + encode_str(self.topic) + bytes([1])
        s.sendall(bytes([0x82]) + encode_len(len(sub)) + sub)
        s.settimeout(0.2)
        return s

    def read_packet(self, s, buf):
        while True:
            if len(buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(buf) and i <= 4:
                    n += (buf[i] & 0x7F) * mult
                    mult *= 128
                    if not buf[i] & 0x80:
                        break
                    i += 1
                if i < len(buf) and len(buf) >= i + 1 + n:
                    pkt = bytes(buf[:i + 1 + n])
                    del buf[:i + 1 + n]
                    return pkt[0], pkt[i + 1:]
            try:
                chunk = s.recv(65536)
            except (socket.timeout, TimeoutError):
                if self.stopping:
                    return None, None
                continue
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk

    def run(self):
        while not self.stopping:
            try:
                s = self.connect()
            except OSError:
                time.sleep(0.1)
                continue
            buf = bytearray()
            try:
                while not self.stopping:
                    kind, body = self.read_packet(s, buf)
                    if kind is None:
                        break
                    if kind >> 4 == 9:
                        self.subscribed.set()
                    elif kind >> 4 == 3:
                        qos = (kind >> 1) & 3
                        tl = struct.unpack("!H", body[:2])[0]
                        topic = body[2:2 + tl].decode()
                        rest = body[2 + tl:]
                        if qos:
                            mid, rest = rest[:2], rest[2:]
                            s.sendall(bytes([0x40, 2]) + mid)
                        with self.lock:
                            self.messages.append((topic, rest.decode()))
            except (OSError, ConnectionError):
                time.sleep(0.1)
            finally:
                s.close()

    def frames(self):
        with self.lock:
            return [json.loads(p)["frame"] for _, p in self.messages]


def run_pipeline(desc, timeout_s=120, on_bus=None):
    p = Gst.parse_launch(desc)
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    warnings, error = [], None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = bus.timed_pop_filtered(50 * Gst.MSECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                     | Gst.MessageType.WARNING)
        if on_bus:
            on_bus(p)
        if msg is None:
            continue
        if msg.type == Gst.MessageType.WARNING:
            warnings.append(msg.parse_warning()[0].message)
            continue
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            error = f"{err.message} ({dbg})"
        break
    else:
        error = "timed out"
    return p, warnings, error


def stats_of(p):
    return p.get_by_name("infer").get_property("stats")


def test_broker_restart(fixtures, work, queue):
    """The broker stopped for 2 s mid-stream; `queue` documents may wait."""
    print(f"-- publish-queue-size={queue}", flush=True)
    port = free_port()
    bwork = os.path.join(work, f"broker-{queue}")
    os.makedirs(bwork)
    broker = Broker(bwork, port)
    broker.start()
    sub = Subscriber(port, "ptm/#", f"ptm-test-subscriber-{queue}")
    sub.start()
    check(sub.subscribed.wait(10), "the subscriber is subscribed")

    frames, kill_at, down_s = 1000, 250, 2.0  # at 60 fps: the broker is down from 4.2 s to 6.2 s
    times = []
    killed = threading.Event()

    def probe(pad, info):
        times.append(time.monotonic())
        if len(times) == kill_at:
            killed.set()
        return Gst.PadProbeReturn.OK

    desc = (f"videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=64,height=64,framerate=60/1 ! "
            f"ptminfer name=infer model={fixtures}/mobilenet_v3_small.pth input-size=64 post-messages=false "
            f"publish=mqtt://127.0.0.1:{port} publish-qos=1 publish-queue-size={queue} "
            f"publish-topic=ptm/{{element}}/{{model}} ! fakesink name=sink sync=true")
    p = Gst.parse_launch(desc)
    p.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    reconnected = {}

    def outage():
        killed.wait(60)
        broker.stop()
        reconnected["down"] = len(times)
        time.sleep(down_s)
        broker.start()
        reconnected["up"] = len(times)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            s = stats_of(p)
            if s.get_value("publish-connects") >= 2:
                reconnected["frame"] = len(times)
                return
            time.sleep(0.02)

    t = threading.Thread(target=outage)
    t.start()
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    warnings, error = [], None
    while True:
        msg = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                     | Gst.MessageType.WARNING)
        if msg is None:
            error = "no EOS within 60 s"
            break
        if msg.type == Gst.MessageType.WARNING:
            warnings.append(msg.parse_warning()[0].message)
            continue
        if msg.type == Gst.MessageType.ERROR:
            error = msg.parse_error()[0].message
        break
    t.join()
    p.set_state(Gst.State.NULL)  # stop: what is queued drains to the broker
    check(error is None, f"the stream ran to its end ({error})")
    s = stats_of(p)
    offered, delivered, dropped, queued = (s.get_value(k) for k in (
        "publish-offered", "published", "publish-dropped", "publish-queued"))
    print(f"     stats: offered {offered}, delivered {delivered}, dropped {dropped}, queued {queued}, "
          f"connects {s.get_value('publish-connects')}; broker down at frame {reconnected.get('down')}, up at "
          f"{reconnected.get('up')}, publisher reconnected by frame {reconnected.get('frame')}")
    check(offered == frames, f"one document per frame offered ({offered} of {frames})")
    check(offered == delivered + dropped + queued and queued == 0,
          "every document delivered or dropped, none left queued")
    if queue >= frames:
        check(dropped == 0, f"a queue of {queue} held everything through the outage ({dropped} dropped)")
    else:
        check(dropped > 0, f"the outage with a queue of {queue} dropped documents ({dropped})")
    check("frame" in reconnected, "the publisher reconnected after the broker came back")

    # The subscriber's session was kept by the broker: everything the broker
    # took arrives, possibly twice (QoS 1 is at least once).
    deadline = time.monotonic() + 20
    want = frames - dropped
    while time.monotonic() < deadline and len(set(sub.frames())) < want:
        time.sleep(0.1)
    time.sleep(0.5)  # nothing more should come
    got = set(sub.frames())
    sub.stopping = True
    broker.stop()
    missing = sorted(set(range(frames)) - got)
    check(len(got) == want and not (got - set(range(frames))),
          f"frames received {len(got)} = offered {frames} - dropped {dropped} (lost and counted alike)")
    rf = reconnected.get("frame", frames)
    check(all(kill_at - 70 <= m < rf for m in missing),
          f"only frames of the outage are missing ({missing[:3]}..{missing[-3:] if missing else ''}, outage "
          f"from frame {kill_at}, reconnected by {rf}); every frame after the reconnect arrived")
    if dropped:
        check(any("Results are being dropped" in w for w in warnings), "a warning says results are being dropped")

    # The frame rate while the broker was down and that before (printed: a
    # shared machine's timings; test_broker_frozen checks no buffer waits).
    def fps(a, b):
        return (b - a) / (times[b] - times[a])
    up_fps = fps(20, kill_at - 1)
    down_fps = fps(reconnected["down"], min(rf, len(times) - 1)) if "down" in reconnected else 0
    gaps = max(times[i + 1] - times[i] for i in range(reconnected.get("down", 1), min(rf, len(times) - 1)))
    print(f"     frame rate: {up_fps:.1f} fps with the broker up, {down_fps:.1f} fps while it was down; "
          f"longest gap while down {gaps * 1000:.0f} ms")
    # The document.
    with sub.lock:
        topic, payload = sub.messages[0]
    doc = json.loads(payload)
    check(topic == "ptm/infer/mobilenet_v3_small", f"topic from the template: {topic}")
    check(doc.get("element") == "infer" and doc.get("model") == "mobilenet_v3_small" and doc.get("stream")
          and isinstance(doc.get("pts"), int) and len(doc.get("results", [])) == 5
          and {"class", "label", "score"} <= set(doc["results"][0]),
          f"the document: element, stream, model, pts, frame, results ({payload[:120]}...)")


def test_broker_frozen(fixtures, work):
    """The broker frozen from frame 50 to the end of a stream run as fast as
    it goes: the stream must end while the broker is still frozen."""
    print("-- the broker frozen mid-stream", flush=True)
    port = free_port()
    bwork = os.path.join(work, "broker-frozen")
    os.makedirs(bwork)
    broker = Broker(bwork, port)
    broker.start()
    frames, freeze_at = 600, 50
    count = [0]

    def probe(pad, info):
        count[0] += 1
        if count[0] == freeze_at:
            os.kill(broker.proc.pid, signal.SIGSTOP)
        return Gst.PadProbeReturn.OK

    desc = (f"videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=64,height=64 ! "
            f"ptminfer name=infer model={fixtures}/mobilenet_v3_small.pth input-size=64 post-messages=false "
            f"publish=mqtt://127.0.0.1:{port} publish-qos=1 publish-queue-size=100 ! fakesink name=sink sync=false")
    p = Gst.parse_launch(desc)
    p.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    ended, error = False, None
    try:
        # Seconds of frames; the deadline only catches a stream held by the broker.
        msg = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        if msg is None:
            error = "no EOS within 120 s"
        elif msg.type == Gst.MessageType.ERROR:
            error = msg.parse_error()[0].message
        else:
            ended = True
        passed = count[0]
        state = open(f"/proc/{broker.proc.pid}/stat").read().rsplit(")", 1)[1].split()[0]
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    p.set_state(Gst.State.NULL)  # stop: what is queued drains to the broker, running again
    s = stats_of(p)
    broker.stop()
    offered, delivered, dropped, queued = (s.get_value(k) for k in (
        "publish-offered", "published", "publish-dropped", "publish-queued"))
    print(f"     {passed} of {frames} frames passed; broker state at the end '{state}'; stats: offered {offered}, "
          f"delivered {delivered}, dropped {dropped}, queued {queued}")
    check(ended and error is None and passed == frames,
          f"the stream reached its end while the broker was frozen: no buffer waited on it ({passed} of {frames} "
          f"frames; {error})")
    check(state == "T", f"the broker was still frozen at the end (process state '{state}')")
    check(offered == frames, f"one document per frame offered ({offered} of {frames})")
    check(offered == delivered + dropped + queued and queued == 0,
          "every document delivered or dropped, none left queued after the broker resumed")


def make_tls(work):
    ca_key, ca, key, csr, cert = (os.path.join(work, n) for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                                 "server.pem"))
    ext = os.path.join(work, "ext.cnf")
    # The extensions strict verifiers want (OpenSSL 3.5, Python 3.13's default context).
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=ptm test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
        "-days", "2", "-extfile", ext)
    return {"ca": ca, "cert": cert, "key": key}


def test_tls(fixtures, work):
    import ssl
    twork = os.path.join(work, "tls")
    os.makedirs(twork)
    tls = make_tls(twork)
    port = free_port()
    broker = Broker(twork, port, tls)
    broker.start()
    ctx = ssl.create_default_context(cafile=tls["ca"])
    sub = Subscriber(port, "cams/#", "ptm-tls-subscriber", ctx)
    sub.start()
    check(sub.subscribed.wait(10), "TLS: the subscriber is subscribed")
    n = 20
    p, warnings, error = run_pipeline(
        f"videotestsrc num-buffers={n} ! video/x-raw,width=64,height=64 ! ptminfer name=infer "
        f"model={fixtures}/mobilenet_v3_small.pth input-size=96 publish=mqtts://localhost:{port} "
        f"publish-tls-ca={tls['ca']} publish-topic=cams/{{element}} ! fakesink")
    p.set_state(Gst.State.NULL)
    s = stats_of(p)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(set(sub.frames())) < n:
        time.sleep(0.05)
    check(error is None and s.get_value("published") == n and sorted(set(sub.frames())) == list(range(n)),
          f"TLS: {len(set(sub.frames()))} of {n} documents over mqtts:// ({error}; {s.to_string()})")
    sub.stopping = True
    broker.stop()


def test_file_and_stdout(fixtures, work):
    path = os.path.join(work, "published.jsonl")
    n = 12
    p, warnings, error = run_pipeline(
        f"videotestsrc num-buffers={n} ! video/x-raw,width=64,height=64 ! ptminfer name=infer "
        f"model={fixtures}/mobilenet_v3_small.pth input-size=96 publish=file://{path} ! fakesink")
    p.set_state(Gst.State.NULL)
    with open(path) as f:
        docs = [json.loads(line) for line in f]
    check(error is None and [d["frame"] for d in docs] == list(range(n))
          and stats_of(p).get_value("published") == n, f"file://: {len(docs)} JSON lines, one per frame")

    # Per region: regions attached by the test as ROI meta (as a detector
    # would), one document each.
    boxes = [("face", 4, 4, 30, 30), ("car", 20, 10, 40, 50)]
    path = os.path.join(work, "regions.jsonl")
    p = Gst.parse_launch(
        f"appsrc name=src format=time caps=video/x-raw,format=RGB,width=64,height=64,framerate=10/1 ! "
        f"ptminfer name=infer model={fixtures}/mobilenet_v3_small.pth input-size=96 inference-region=roi-list "
        f"min-region-size=8 publish=file://{path} publish-per=region ! fakesink")
    src = p.get_by_name("src")
    p.set_state(Gst.State.PLAYING)
    for i in range(5):
        buf = Gst.Buffer.new_wrapped(bytes((i * 40 + k) % 256 for k in range(64 * 64 * 3)))
        buf.pts = i * Gst.SECOND // 10
        buf.duration = Gst.SECOND // 10
        for t, x, y, w, h in boxes:
            GstVideo.buffer_add_video_region_of_interest_meta(buf, t, x, y, w, h)
        src.emit("push-buffer", buf)
    src.emit("end-of-stream")
    msg = p.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    p.set_state(Gst.State.NULL)
    with open(path) as f:
        docs = [json.loads(line) for line in f]
    check(msg and msg.type == Gst.MessageType.EOS and len(docs) == 10
          and [(d["frame"], d["region"], d["type"], d["x"], d["width"]) for d in docs[:2]]
          == [(0, 0, "face", 4, 30), (0, 1, "car", 20, 40)] and all(len(d["results"]) == 5 for d in docs),
          f"publish-per=region: {len(docs)} documents for 5 frames x 2 regions, each with its box")

    # stdout, in a child process (gst-launch-1.0 -q): one JSON document a line.
    out = subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=3", "!",
                          "video/x-raw,width=64,height=64", "!", "ptminfer",
                          f"model={fixtures}/mobilenet_v3_small.pth", "input-size=96", "post-messages=false",
                          "publish=stdout", "!", "fakesink"], capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    check(out.returncode == 0 and [d["frame"] for d in lines] == [0, 1, 2], f"stdout: {len(lines)} documents")


def test_bad_destinations(fixtures):
    for dest, extra, words in [("bogus://x", "", "bogus://x"), ("mqtt://host:99999", "", "port"),
                               ("mqtt://", "", "no broker host"),
                               ("file:///nonexistent-dir/x.jsonl", "", "nonexistent-dir"),
                               ("mqtt://127.0.0.1", "publish-per=region", "inference-region=roi-list"),
                               ("mqtt://127.0.0.1", "publish-tls-ca=/etc/hostname", "mqtts://")]:
        p, warnings, error = run_pipeline(
            f"videotestsrc num-buffers=2 ! ptminfer model={fixtures}/mobilenet_v3_small.pth publish={dest} {extra} "
            f"! fakesink", timeout_s=60)
        p.set_state(Gst.State.NULL)
        check(error is not None and words in error, f"publish={dest} {extra}: error naming '{words}' ({error})")


def main():
    fixtures, work = sys.argv[1], sys.argv[2]
    for tool in ("mosquitto", "openssl"):
        if not shutil.which(tool):
            print(f"FAIL {tool} is not installed (scripts/install-deps installs it)")
            return 1
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    Gst.init(None)
    test_broker_restart(fixtures, work, 1000)  # the default queue: nothing lost
    test_broker_restart(fixtures, work, 100)   # a short queue: losses, counted exactly
    test_broker_frozen(fixtures, work)
    test_tls(fixtures, work)
    test_file_and_stdout(fixtures, work)
    test_bad_destinations(fixtures)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
