#!/usr/bin/env python3
"""The closed loop in one pipeline: frames are classified live by ptminfer
while a tee feeds the same frames, labelled, to ptmtrainsink; each "train"
writes new weights atomically, and ptminfer (reload-on-change) swaps them in
between two frames without stopping the video.

Here the "camera" is videotestsrc switching between patterns, and the
labels come from the application as "ptm-label" events, in stream order.

    pipelines/closed_loop.py --backbone resnet18.pth --out DIR [--rounds 2]

Prints what ptminfer says about each pattern before and after training.
"""
import argparse
import os
import shutil
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

PATTERNS = ["smpte", "checkers-8", "circular", "ball"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=24, help="frames per pattern and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--annotate", help="also write the annotated video (MJPEG AVI) here")
    args = ap.parse_args(argv)
    Gst.init(None)
    os.makedirs(args.out, exist_ok=True)
    model = os.path.join(args.out, "live.pth")
    shutil.copy(args.backbone, model)  # serves (ImageNet head) until the first training
    labels_file = os.path.join(args.out, "live.labels.txt")
    if os.path.exists(labels_file):
        os.remove(labels_file)

    p = Gst.parse_launch(
        "videotestsrc name=cam is-live=true pattern=smpte "
        "! video/x-raw,format=RGB,width=320,height=240,framerate=30/1 "
        "! tee name=t "
        f"t. ! queue ! ptminfer name=infer model={model} reload-on-change=true top-k=1 ! "
        + (f"ptmoverlay show-timing=true ! videoconvert ! jpegenc ! avimux ! filesink location={args.annotate} "
           if args.annotate else "fakesink sync=false ")
        + 
        f"t. ! queue ! ptmtrainsink name=trainer model={args.backbone} output={model} epochs=30 train-on-eos=false")
    cam, trainer = p.get_by_name("cam"), p.get_by_name("trainer")
    state = {"frame": 0, "pattern": None, "teach": True}
    shown = {}  # buffer pts -> (frame number, pattern on it)
    src = cam.get_static_pad("src")

    def schedule(pad, info):
        # Every `frames` frames the next pattern; the label travels with the
        # frames (a serialized event), so the queue cannot mix them up.
        i = state["frame"] // args.frames
        pattern = PATTERNS[i % len(PATTERNS)]
        if pattern != state["pattern"]:
            state["pattern"] = pattern
            cam.set_property("pattern", pattern)
            st = Gst.Structure.new_empty("ptm-label")
            st.set_value("label", pattern if state["teach"] else "")
            pad.push_event(Gst.Event.new_custom(Gst.EventType.CUSTOM_DOWNSTREAM, st))
        shown[info.get_buffer().pts] = (state["frame"], pattern)
        state["frame"] += 1
        return Gst.PadProbeReturn.OK

    src.add_probe(Gst.PadProbeType.BUFFER, schedule)
    bus = p.get_bus()
    results = []  # (source frame, pattern shown, top label)
    reloads = []

    def pump(until, what, seconds=120):
        # The loop runs on frames, not on the clock: a machine that cannot
        # classify 30 frames a second still sees every pattern each tour.
        end = time.time() + seconds
        while not until():
            if time.time() > end:
                raise RuntimeError(f"timed out after {seconds} s waiting for {what}")
            m = bus.timed_pop(50 * Gst.MSECOND)
            if m is None:
                continue
            s = m.get_structure()
            if m.type == Gst.MessageType.ERROR:
                raise RuntimeError(m.parse_error()[0].message)
            if m.type == Gst.MessageType.ELEMENT and s.get_name() == "ptm-classification":
                frame, pattern = shown.get(s.get_value("pts"), (-1, None))
                results.append((frame, pattern, s.get_value("top-label")))
            elif m.type == Gst.MessageType.ELEMENT and s.get_name() == "model-reload":
                reloads.append(s.get_value("success"))
                print(f"ptminfer reloaded {s.get_value('model')}: {'ok' if s.get_value('success') else s.get_value('reason')}")
            elif m.type == Gst.MessageType.ELEMENT and s.get_name() == "ptm-training-done":
                print(f"trained: {s.get_value('classes')} classes from {s.get_value('samples')} samples, "
                      f"validation accuracy {s.get_value('validation-accuracy'):.3f}")

    tour = args.frames * len(PATTERNS)
    p.set_state(Gst.State.PLAYING)
    for r in range(args.rounds):
        pump(lambda: state["frame"] >= (r + 1) * tour, "a tour of the patterns")  # labelled
        print(f"round {r + 1}: train on what was seen so far")
        trainer.emit("train")
        pump(lambda: len(reloads) > r, "ptminfer to reload the new weights")  # the file changes
    # Frames made from here on are classified by the newest weights (the
    # swap happens before the next buffer); another tour, unlabelled: how
    # does ptminfer do now?
    state["teach"] = False
    first = state["frame"]
    classified = lambda: sum(1 for f, pattern, _ in results if pattern is not None and f >= first)
    pump(lambda: classified() >= tour, "a tour of the patterns classified")
    p.send_event(Gst.Event.new_eos())  # finish the file properly
    bus.timed_pop_filtered(10 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    p.set_state(Gst.State.NULL)
    after = [r for r in results if r[1] is not None and r[0] >= first]
    right = sum(1 for _, shown, top in after if shown == top)
    acc = right / max(1, len(after))
    print(f"after training: {right}/{len(after)} frames labelled with the pattern shown ({acc * 100:.1f} %)")
    return acc, reloads


if __name__ == "__main__":
    acc, reloads = main()
    # As a test (the suite runs it): the new weights must have been picked up
    # live and must recognise the patterns.
    sys.exit(0 if acc >= 0.9 and reloads and all(reloads) else 1)
