#!/usr/bin/env python3
"""Seeks through ptminfer: a real video (opencv-doc's vtest.avi) decoded by
GStreamer, seeked while playing and while paused (flushing, accurate),
with batch-size 1 and 4 (a batch in progress at the seek) and with
interval 3: no error, no buffer from before the seek after it, every
buffer that reaches the sink classified (its meta), frame numbers starting
again at 0 after each flushing seek, and the results after the seek
(frame, pts, top class and score) equal to those of a run that started
there.

    test_seek.py FIXTURES_DIR
"""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
from checks import check, failures  # noqa: E402


def pipeline(model, extra):
    p = Gst.parse_launch(
        f"filesrc location={VIDEO} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! "
        f"ptminfer name=infer model={model} input-size=96 top-k=1 {extra} ! fakesink name=sink sync=false")
    seen = []  # (pts, has classification meta)

    def probe(pad, info):
        buf = info.get_buffer()
        seen.append((buf.pts, buf.get_meta("GstPtmClassificationMetaAPI") is not None))
        return Gst.PadProbeReturn.OK
    p.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, probe)
    return p, seen


def messages_until(p, stop, timeout_s=120):
    """ptm-classification messages (frame, pts, top label) until `stop`
    says so or EOS; raises on an error."""
    out = []
    bus = p.get_bus()
    while not stop(out):
        msg = bus.timed_pop_filtered(timeout_s * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                     | Gst.MessageType.ELEMENT)
        if msg is None:
            raise RuntimeError("no message for %d s" % timeout_s)
        if msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            raise RuntimeError(f"{err.message} ({dbg})")
        if msg.type == Gst.MessageType.EOS:
            break
        s = msg.get_structure()
        if s.get_name() == "ptm-classification":
            out.append((s.get_value("frame"), s.get_value("pts"), s.get_value("top-label"),
                        round(s.get_value("top-score"), 6)))
    return out


def from_start_at(model, extra, position):
    """Results of a run that seeks to `position` before the first frame."""
    p, _ = pipeline(model, extra)
    p.set_state(Gst.State.PAUSED)
    p.get_state(30 * Gst.SECOND)
    p.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE, position)
    p.get_state(30 * Gst.SECOND)
    p.set_state(Gst.State.PLAYING)
    msgs = messages_until(p, lambda m: sum(1 for x in m if x[1] >= position) >= 30)
    p.set_state(Gst.State.NULL)
    # The preroll frame before the seek has its message too.
    return [x for x in msgs if x[1] >= position]


def run(model, extra, paused):
    name = f"{extra or 'batch-size=1'}, seek while {'paused' if paused else 'playing'}"
    target = 4 * Gst.SECOND
    p, seen = pipeline(model, extra)
    p.set_state(Gst.State.PLAYING)
    try:
        before = messages_until(p, lambda m: len(m) >= 25)
        if paused:
            p.set_state(Gst.State.PAUSED)
            p.get_state(30 * Gst.SECOND)
        mark = len(seen)
        ok = p.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE, target)
        if paused:
            p.get_state(30 * Gst.SECOND)
            p.set_state(Gst.State.PLAYING)
        # Messages already posted for frames before the seek are skipped:
        # the first after it has frame 0 again.
        def since_zero(m):
            firsts = [i for i, x in enumerate(m) if x[0] == 0]
            return m[firsts[0]:] if firsts else []
        after = since_zero(messages_until(p, lambda m: len(since_zero(m)) >= 30))[:30]
        p.set_state(Gst.State.NULL)
    except RuntimeError as e:
        p.set_state(Gst.State.NULL)
        check(False, f"{name}: {e}")
        return
    check(ok and len(before) >= 25, f"{name}: seek accepted after {len(before)} frames")
    post = seen[mark:]
    first_new = next((i for i, (pts, _) in enumerate(post) if pts >= target), len(post))
    # Buffers already pushed when the seek came may finish; after the first
    # buffer of the new segment, none is from before it.
    stale = [pts for pts, _ in post[first_new:] if pts < target]
    check(first_new < len(post) and not stale, f"{name}: nothing from before the seek after it ({len(stale)} stale)")
    check(all(has for _, has in seen), f"{name}: every buffer at the sink carries its classification "
          f"({sum(1 for _, h in seen if not h)} without)")
    frames = [x[0] for x in after]
    check(frames == list(range(len(frames))) and len(frames) == 30 and after[0][1] >= target,
          f"{name}: frames counted from 0 at {after[0][1] / Gst.SECOND if after else -1:.2f} s after the seek")
    want = from_start_at(model, extra, target)
    check(after == want[:30],
          f"{name}: results after the seek equal a run started there ({len(want)} compared)")


def main():
    fixtures = sys.argv[1]
    Gst.init(None)
    model = f"{fixtures}/mobilenet_v3_small.pth"
    for extra in ("", "batch-size=4", "interval=3"):
        for paused in (False, True):
            run(model, extra, paused)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
