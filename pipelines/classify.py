#!/usr/bin/env python3
"""Embedding ptm in a Python (PyGObject) application.

Classifies a video file (or GStreamer's test pattern) and prints the top
labels of each frame, read from ptminfer's "ptm-classification" bus
messages.

    pipelines/classify.py --model resnet18.pth [--labels labels.txt] [--frames N] [VIDEO]

The plugin must be on GST_PLUGIN_PATH (`meson devenv -C build` sets it).
`classify()` is importable: it returns one dict per frame.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def caps_size(caps):
    """Width and height of the caps' first structure (GStreamer 1.26's Python
    overrides hand it out as a context manager, 1.22's directly)."""
    s = caps.get_structure(0)
    if hasattr(s, "__enter__"):
        with s as st:
            return st.get_value("width"), st.get_value("height")
    return s.get_value("width"), s.get_value("height")


def stop_after(pad, frames):
    """Lets `frames` buffers through `pad`, then ends the stream there (EOS
    downstream) and drops whatever still comes."""
    seen = [0]

    def probe(pad, _info):
        seen[0] += 1
        if seen[0] <= frames:
            return Gst.PadProbeReturn.OK
        if seen[0] == frames + 1:
            pad.get_peer().send_event(Gst.Event.new_eos())
        return Gst.PadProbeReturn.DROP

    pad.add_probe(Gst.PadProbeType.BUFFER, probe)


def classify(model, video=None, frames=0, top_k=5, labels=None, extra=""):
    Gst.init(None)
    src = (f'filesrc location="{video}" ! decodebin' if video
           else "videotestsrc pattern=ball")
    desc = (f"{src} ! videoconvert name=convert ! ptmpreprocess ! "
            f'ptminfer name=infer model="{model}" top-k={top_k} {extra}'
            + (f' labels="{labels}"' if labels else "") + " ! fakesink sync=false")
    pipeline = Gst.parse_launch(desc)
    if frames:
        stop_after(pipeline.get_by_name("convert").get_static_pad("src"), frames)
    results, error = [], []
    loop = GLib.MainLoop()

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.ELEMENT and msg.get_structure().get_name() == "ptm-classification":
            s = msg.get_structure()
            results.append({
                "frame": s.get_value("frame"),
                "pts": s.get_value("pts"),
                "labels": list(s.get_value("labels")),
                "class_ids": list(s.get_value("class-ids")),
                "scores": list(s.get_value("scores")),
                "reused": s.get_value("reused"),
                "inference_ms": s.get_value("inference-ns") / 1e6,
            })
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            error.append(f"{err.message} ({dbg})")
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
        bus.remove_signal_watch()
    if error:
        raise RuntimeError(error[0])
    return results


def main():
    ap = argparse.ArgumentParser(description="Classify a video with ptm")
    ap.add_argument("--model", required=True)
    ap.add_argument("--labels")
    ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: all)")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("video", nargs="?", help="video file (default: test pattern, needs --frames)")
    args = ap.parse_args()
    if not args.video and not args.frames:
        args.frames = 30
    for r in classify(args.model, args.video, args.frames, args.top_k, args.labels):
        best = ", ".join(f"{l} {s:.2f}" for l, s in zip(r["labels"], r["scores"]))
        print(f"frame {r['frame']:5d}  {r['inference_ms']:6.1f} ms  {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
