#!/usr/bin/env python3
"""Live overload: a 30 fps live source into ptminfer running a model slower
than real time (resnet50 on one thread, at the input size that takes
~0.15 s a frame on this machine: 320 px, or less where LibTorch is slower),
into a sink that syncs to the clock and sends QoS events, for a bounded run.

  - QoS on (the default), batch-size 1 and 4: how late frames reach the sink
    stays bounded (the delay behind the clock in the run's second half
    stays under the pipeline's latency plus one second), ptminfer drops
    late frames with QoS messages, the latency query includes ptminfer's
    own (at least its longest model run, plus the frames a batch holds),
    and the resident set stays flat (its floor, the lowest of readings
    every 50 ms, over 35-60% of the run and over its last quarter: a single
    reading lands anywhere in a forward pass, whose activations come and go
    by tens of MB at batch-size 4);
  - qos=false, as a control: every frame is classified and the delay grows
    with the run (what the QoS policy prevents), so the bound above can fail.

    test_overload.py FIXTURES_DIR [SECONDS (default 8)]
"""
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

from checks import check, failures, proc_status_kb  # noqa: E402


def rss_mb():
    return proc_status_kb("VmRSS") / 1024.0


def seconds_a_frame(model, size):
    """How long ptminfer takes a frame at `size` on one thread (the median of
    frames 2-4, the first being a warm-up)."""
    p = Gst.parse_launch(
        f"videotestsrc num-buffers=4 ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"ptminfer model={model} input-size={size} num-threads=1 top-k=1 ! fakesink")
    p.set_state(Gst.State.PLAYING)
    times = []
    while True:
        m = p.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.ELEMENT | Gst.MessageType.EOS |
                                           Gst.MessageType.ERROR)
        if m is None or m.type != Gst.MessageType.ELEMENT:
            break
        if m.get_structure().get_name() == "ptm-classification":
            times.append(m.get_structure().get_value("inference-ns") / 1e9)
    p.set_state(Gst.State.NULL)
    return sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else None


def run(model, size, seconds, extra):
    p = Gst.parse_launch(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,format=RGB,width=320,height=240,framerate=30/1 ! "
        f"ptminfer name=infer model={model} input-size={size} num-threads=1 top-k=1 {extra} ! "
        "fakesink name=sink sync=true qos=true signal-handoffs=true")
    sink = p.get_by_name("sink")
    delays = []  # (seconds since start, how late the frame was rendered)
    t_start = [None]

    def handoff(_sink, buf, _pad):
        clock = p.get_clock()
        if clock is None or buf.pts == Gst.CLOCK_TIME_NONE:
            return
        seg = _pad.get_sticky_event(Gst.EventType.SEGMENT, 0).parse_segment()
        running = seg.to_running_time(Gst.Format.TIME, buf.pts)
        now = clock.get_time() - p.get_base_time()
        if t_start[0] is None:
            t_start[0] = time.monotonic()
        delays.append((time.monotonic() - t_start[0], (now - running) / Gst.SECOND))
    sink.connect("handoff", handoff)
    qos_drops = [0]
    inference = []
    errors = []
    rss = []  # (seconds since PLAYING, MB)
    loop = GLib.MainLoop()

    def on_message(_bus, m):
        if m.type == Gst.MessageType.QOS and m.src.get_name() == "infer":
            qos_drops[0] = max(qos_drops[0], m.parse_qos_stats()[2])
        elif m.type == Gst.MessageType.ELEMENT and m.get_structure().get_name() == "ptm-classification":
            inference.append(m.get_structure().get_value("inference-ns") / 1e9)
        elif m.type == Gst.MessageType.ERROR:
            errors.append(m.parse_error()[0].message)
            loop.quit()
        elif m.type == Gst.MessageType.LATENCY:
            p.recalculate_latency()
    bus = p.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    p.set_state(Gst.State.PLAYING)
    t_playing = time.monotonic()
    GLib.timeout_add(50, lambda: rss.append((time.monotonic() - t_playing, rss_mb())) or True)
    GLib.timeout_add(int(seconds * 1000), lambda: loop.quit() or False)
    loop.run()
    q = Gst.Query.new_latency()
    latency = p.query(q) and q.parse_latency()[1] / Gst.SECOND
    p.set_state(Gst.State.NULL)
    bus.remove_signal_watch()
    second_half = [d for t, d in delays if t > seconds / 2]
    return {"delays": delays, "late": max(second_half) if second_half else None,
            "final": delays[-1][1] if delays else None, "qos_drops": qos_drops[0],
            # the runs the reported latency covers (ptminfer keeps the last 16)
            "inference": max(inference[-16:]) if inference else None, "classified": len(inference),
            "latency": latency if latency is not False else None, "errors": errors,
            "rss": {"early": floor(rss, 0.35 * seconds, 0.6 * seconds), "end": floor(rss, 0.75 * seconds, seconds)}}


def floor(readings, start, end):
    """The lowest resident set read between `start` and `end` seconds."""
    inside = [mb for t, mb in readings if start <= t <= end]
    return min(inside) if inside else None


def main():
    Gst.init(None)
    model = sys.argv[1] + "/resnet50.pth"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
    # ~0.15 s a frame: 5x slower than the source, and enough frames in a run.
    probed = []

    def probe(s):
        probed.append((s, seconds_a_frame(model, s)))
        return probed[-1][1]
    size = 320
    t = probe(size)
    if t is not None and t > 0.3:
        size = max(64, int(320 * (0.15 / t) ** 0.5) // 32 * 32)
        t = probe(size)
        # Time does not follow the pixel count everywhere (LibTorch 2.x runs
        # small convolutions through other kernels): up again until a frame
        # takes 0.1 s, so that batches of 4 are slower than real time too.
        while t is not None and t < 0.1 and size < 320:
            size += 32
            t = probe(size)
    print("seconds a frame by size: " + ", ".join(f"{s} px {x}" for s, x in probed), flush=True)
    print(f"resnet50 at {size} px on one thread: {t} s a frame", flush=True)
    results = {}
    for name, extra in (("qos, batch-size 1", ""), ("qos, batch-size 4", "batch-size=4"),
                        ("qos=false", "qos=false")):
        r = run(model, size, seconds, extra)
        results[name] = r
        print(f"{name}: {len(r['delays'])} frames rendered, {r['classified']} classified, "
              f"longest model run {r['inference'] or 0:.3f} s, pipeline latency {r['latency'] or 0:.3f} s, "
              f"late by at most {r['late'] or 0:.3f} s in the second half (last {r['final'] or 0:.3f} s), "
              f"{r['qos_drops']} dropped by QoS, RSS floor {r['rss']['early'] or 0:.0f} -> {r['rss']['end'] or 0:.0f} MB",
              flush=True)
        check(not r["errors"], f"{name}: no error ({r['errors'][:1]})")
        check(len(r["delays"]) > 0, f"{name}: frames reach the sink")
    slow = results["qos=false"]
    check(slow["inference"] is not None and slow["inference"] * 30 > 1.5,
          "the model is slower than real time (so this tests overload): %.3f s a frame at 30 fps"
          % (slow["inference"] or 0))
    for name in ("qos, batch-size 1", "qos, batch-size 4"):
        r = results[name]
        check(r["qos_drops"] > 0, f"{name}: ptminfer drops late frames with QoS messages ({r['qos_drops']})")
        check(r["latency"] is not None and r["inference"] is not None and r["latency"] >= r["inference"],
              f"{name}: the latency query includes ptminfer's model run ({r['latency']} >= {r['inference']})")
        check(r["late"] is not None and r["latency"] is not None and r["late"] < r["latency"] + 1.0,
              f"{name}: delay bounded: late by {r['late']} s at most in the second half, "
              f"latency {r['latency']} s + 1 s")
        early, end = r["rss"]["early"], r["rss"]["end"]
        check(early is not None and end is not None and end - early < 20,
              f"{name}: RSS flat (floor {early or 0:.1f} MB over 35-60% of the run, {end or 0:.1f} MB over its last "
              "quarter)")
    check(results["qos, batch-size 4"]["latency"] >= results["qos, batch-size 1"]["inference"] + 3 / 30 - 1e-3,
          "batch-size 4: the latency includes the three frames a batch holds")
    # The control: without QoS the delay grows through the run.
    check(slow["final"] is not None and slow["final"] > results["qos, batch-size 1"]["late"] + 1.0,
          f"control, qos=false: the delay grows without QoS ({slow['final']:.2f} s at the end)")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all overload checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
