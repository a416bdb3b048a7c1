#!/usr/bin/env python3
"""Many streams, one model: N streams of 1280x720 RGB frames (vtest.avi,
decoded once, the buffers made before the clock) through N ptminfer
elements of one pipeline in one process, each run in a process of its own:

  1 stream             share-model (the default) and share-model=false
  N streams (8)        share-model: one instance, forward passes on its
                       thread taking every stream's waiting frames
                       together; and share-model=false: a model per
                       element, each run on its streaming thread

Prints per run: aggregate frames per second (every stream's frames over the
wall time), that ÷ one stream's (the shared single stream), the resident
memory ptm added (after preroll and warm-up frames, before the timed
buffers are made) and per stream beyond the first, and the shared
instance's passes and images. The issue's criteria underneath: weights
loaded once, RSS per extra stream <= 30 MB, aggregate >= 0.9x one stream.

    bench_streams.py FIXTURES_DIR [--model resnet18] [--streams 8]
                     [--frames 240] [--threads 2] [--csv OUT.csv]
"""
import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_field import W, H, decode  # noqa: E402

WARM = 3  # frames a stream classifies before the clock starts


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(a):
    """One run in this process: --child N SHARE; prints its figures."""
    n, share = int(a.child[0]), a.child[1] == "1"
    Gst.init(None)
    per_stream = max(40, a.frames // n)
    frames = decode(min(per_stream, 120))
    base = rss_mb()
    flag = "true" if share else "false"
    p = Gst.parse_launch(" ".join(
        f"appsrc name=src{i} format=time caps=video/x-raw,format=RGB,width={W},height={H},framerate=30/1 ! "
        f'ptminfer name=infer{i} model="{a.model_path}" num-threads={a.threads} share-model={flag} ! '
        "fakesink sync=false" for i in range(n)))
    srcs = [p.get_by_name(f"src{i}") for i in range(n)]
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    loaded = []

    def buffer(i, f):
        b = Gst.Buffer.new_wrapped(f)
        b.pts = i * Gst.SECOND // 30
        b.duration = Gst.SECOND // 30
        return b

    def wait(count):
        """Waits for `count` classifications (None: until EOS)."""
        got = 0
        while count is None or got < count:
            m = bus.timed_pop_filtered(300 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR |
                                       Gst.MessageType.ELEMENT)
            if m is None:
                raise RuntimeError("no message from the pipeline in 300 s")
            if m.type == Gst.MessageType.EOS:
                break
            if m.type == Gst.MessageType.ERROR:
                raise RuntimeError(m.parse_error()[0].message)
            name = m.get_structure().get_name()
            if name == "ptm-classification":
                got += 1
            elif name == "model-loaded":
                loaded.append(m.get_structure().get_value("shared"))
        return got

    for s in srcs:
        for i in range(WARM):
            s.emit("push-buffer", buffer(i, frames[i % len(frames)]))
    wait(WARM * n)
    added = rss_mb() - base
    timed = [[buffer(WARM + i, frames[i % len(frames)]) for i in range(per_stream)] for _ in range(n)]
    t0 = time.perf_counter()
    for k in range(per_stream):  # interleaved, as live sources deliver
        for s, bufs in zip(srcs, timed):
            s.emit("push-buffer", bufs[k])
    for s in srcs:
        s.emit("end-of-stream")
    got = wait(None)
    elapsed = time.perf_counter() - t0
    stats = p.get_by_name("infer0").get_property("stats")
    passes = stats.get_value("shared-passes") if stats.has_field("shared-passes") else 0
    images = stats.get_value("shared-images") if stats.has_field("shared-images") else 0
    p.set_state(Gst.State.NULL)
    if got != n * per_stream:
        raise RuntimeError(f"{got} of {n * per_stream} frames classified")
    print(json.dumps({"streams": n, "share": share, "fps": got / elapsed, "rss_mb": added,
                      "loads": sum(1 for s in loaded if not s), "passes": passes, "images": images}))
    return 0


def run(a, n, share):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), a.fixtures, "--model", a.model,
                        "--frames", str(a.frames), "--threads", str(a.threads),
                        "--child", str(n), "1" if share else "0"],
                       stdout=subprocess.PIPE, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"the run with {n} stream(s), share-model={share}, exited {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fixtures")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--frames", type=int, default=240, help="frames in all (at least 40 a stream)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--csv")
    ap.add_argument("--child", nargs=2, metavar=("N", "SHARE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.model_path = os.path.join(a.fixtures, a.model + ".pth")
    if a.child:
        return child(a)
    n = a.streams
    print(f"{platform.node()}: {os.cpu_count()} cores; {a.model}, {n} streams of {W}x{H} RGB, "
          f"num-threads={a.threads}", flush=True)
    runs = [run(a, 1, True), run(a, 1, False), run(a, n, True), run(a, n, False)]
    one = runs[0]["fps"]
    print(f"{'run':<34} {'fps (all)':>10} {'x 1 stream':>11} {'RSS MB':>8} {'MB/extra':>9} {'loads':>6} "
          f"{'images/pass':>12}")
    rows = []
    for r in runs:
        base = runs[0] if r["share"] else runs[1]
        extra = (r["rss_mb"] - base["rss_mb"]) / (r["streams"] - 1) if r["streams"] > 1 else 0.0
        per_pass = r["images"] / r["passes"] if r["passes"] else 0.0
        label = f"{r['streams']} stream(s), share-model={'true' if r['share'] else 'false'}"
        print(f"{label:<34} {r['fps']:>10.1f} {r['fps'] / one:>11.2f} {r['rss_mb']:>8.0f} "
              f"{extra if r['streams'] > 1 else float('nan'):>9.1f} {r['loads']:>6} {per_pass:>12.2f}")
        rows.append([r["streams"], r["share"], f"{r['fps']:.2f}", f"{r['fps'] / one:.3f}", f"{r['rss_mb']:.1f}",
                     f"{extra:.1f}", r["loads"], r["passes"], r["images"]])
    shared = runs[2]
    extra = (shared["rss_mb"] - runs[0]["rss_mb"]) / (n - 1)
    print(f"criteria ({n} streams, share-model): weights loaded once: {shared['loads'] == 1} "
          f"({shared['loads']} load(s)); RSS per extra stream {extra:.1f} MB (<= 30: {extra <= 30}); "
          f"aggregate {shared['fps'] / one:.2f}x one stream (>= 0.9: {shared['fps'] / one >= 0.9})")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["streams", "share_model", "fps_all", "x_one_stream", "rss_mb", "mb_per_extra_stream",
                        "loads", "passes", "images"])
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
