#!/usr/bin/env python3
"""Python reads ptm's results from buffers through GObject introspection
(GstPtm-1.0), in a pad probe, without the bus: the whole-frame
GstPtmClassificationMeta and the regions of inference-region=roi-list must
say what the bus messages say.

    test_introspection.py FIXTURES_DIR
"""
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
gi.require_version("GstPtm", "1.0")
from gi.repository import Gst, GstPtm, GstVideo  # noqa: E402


def run(desc, push=None):
    """Runs `desc` (a ptminfer named infer) to EOS: what a probe on its src
    pad read through GstPtm, and the element messages."""
    p = Gst.parse_launch(desc)
    seen = []

    def probe(pad, info):
        buf = info.get_buffer()
        meta = GstPtm.buffer_get_classification_meta(buf)
        whole = None
        if meta is not None:
            n = meta.get_n_results()
            whole = ([meta.get_class_id(i) for i in range(n)], [meta.get_label(i) for i in range(n)],
                     [round(meta.get_score(i), 6) for i in range(n)], meta.get_model())
        regions = []
        for i in range(GstPtm.buffer_get_n_regions(buf)):
            s, x, y, w, h, t = GstPtm.buffer_get_region(buf, i)
            regions.append(((t, x, y, w, h), list(s.get_value("labels")),
                            [round(v, 6) for v in s.get_value("scores")]))
        seen.append((whole, regions))
        return Gst.PadProbeReturn.OK

    p.get_by_name("infer").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    if push:
        push(p)
    messages = []
    while True:
        msg = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                     | Gst.MessageType.ELEMENT)
        if msg is None or msg.type == Gst.MessageType.EOS:
            break
        if msg.type == Gst.MessageType.ERROR:
            p.set_state(Gst.State.NULL)
            err, debug = msg.parse_error()
            raise RuntimeError(f"{err.message} ({debug})")
        s = msg.get_structure()
        if s.get_name() in ("ptm-classification", "ptm-region-classification"):
            messages.append(s.copy())
    p.set_state(Gst.State.NULL)
    return seen, messages


def main():
    fixtures = sys.argv[1]
    Gst.init(None)
    model = os.path.join(fixtures, "resnet18.pth")
    failures = passed = 0

    def check(ok, what):
        nonlocal failures, passed
        print(("ok   " if ok else "FAIL ") + what)
        passed, failures = (passed + 1, failures) if ok else (passed, failures + 1)

    seen, messages = run("videotestsrc num-buffers=4 pattern=ball ! video/x-raw,width=160,height=120 ! "
                         f'ptminfer name=infer top-k=3 model="{model}" ! fakesink')
    from_bus = [(list(m.get_value("class-ids")), list(m.get_value("labels")),
                 [round(v, 6) for v in m.get_value("scores")], m.get_value("model")) for m in messages]
    check(len(seen) == 4 and [w for w, _ in seen] == from_bus,
          f"GstPtm.buffer_get_classification_meta in a pad probe: {len(seen)} frames, the bus's classes "
          f"({seen[0][0] if seen else None})")

    def push(p):
        src = p.get_by_name("src")
        buf = Gst.Buffer.new_wrapped(bytes(range(256)) * (320 * 240 * 3 // 256))
        buf.pts = 0
        GstVideo.buffer_add_video_region_of_interest_meta(buf, "face", 20, 30, 100, 80)
        GstVideo.buffer_add_video_region_of_interest_meta(buf, "car", 150, 100, 120, 100)
        src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    seen, messages = run("appsrc name=src format=time caps=video/x-raw,format=RGB,width=320,height=240,framerate=1/1 "
                         f'! ptminfer name=infer inference-region=roi-list top-k=3 model="{model}" ! fakesink', push)
    from_bus = [((m.get_value("region-type"), m.get_value("x"), m.get_value("y"), m.get_value("width"),
                  m.get_value("height")), list(m.get_value("labels")), [round(v, 6) for v in m.get_value("scores")])
                for m in messages]
    regions = seen[0][1] if seen else []
    check(len(seen) == 1 and seen[0][0] is None and len(regions) == 2 and regions == from_bus,
          f"GstPtm.buffer_get_region in a pad probe: {[r[0] for r in regions]}, the bus's classes for each")
    check(GstPtm.buffer_get_region(Gst.Buffer.new(), 0)[0] is None, "no region: None")
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
