#!/usr/bin/env python3
"""ptminfer precision=int8 against fp32 on real frames (the first 60 of
vtest.avi) through the whole pipeline, for a residual network, a depthwise
one and one with SiLU (efficientnet_b0, whose activations stay float32
between quantized convolutions):

  - calibrating on the stream's first frames (calibration-images=8): those
    frames' logits are fp32's (the observed float graph), one
    "int8-calibrated" message says "int8", and every later frame's logits
    are within 5 % of its largest fp32 logit (8-bit activations, 8-bit
    per-channel weights: the documented tolerance, docs/performance.md) and
    not fp32's (int8 did run); top-1 agreement is printed (these fixtures'
    random weights leave close classes: agreement on trained weights is
    the field benchmark's);
  - calibrating on a folder of photographs at load (a text file in it
    skipped): the first frame is already int8's; the "stats" property says
    "int8";
  - a missing folder, or one without images: the element fails to start,
    naming the folder.

PTM_INT8_ALWAYS=1 keeps the int8 graph without timing it against fp32 (the
choice by speed is not the subject here, and a test must not depend on a
timing).

    test_int8.py FIXTURES_DIR
"""
import os
import shutil
import sys
import tempfile

os.environ["PTM_INT8_ALWAYS"] = "1"

import gi  # noqa: E402

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from checks import check, failures  # noqa: E402

DATA = "/usr/share/doc/opencv-doc/examples/data"
VIDEO = f"{DATA}/vtest.avi"
FRAMES = 60
CALIBRATION = 8
TOLERANCE = 0.05


def run(model, classes, props=""):
    """Logits of each frame (by class index), int8-calibrated statuses,
    warnings, the error (or None) and the stats' int8 field."""
    p = Gst.parse_launch(
        f'filesrc location="{VIDEO}" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! '
        f"ptminfer name=infer model={model} output=logits top-k={classes} {props} ! fakesink")
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    out, calibrated, warnings, error, int8 = [], [], [], None, None
    while len(out) < FRAMES:
        m = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.ELEMENT | Gst.MessageType.EOS |
                                   Gst.MessageType.ERROR | Gst.MessageType.WARNING)
        if m is None or m.type == Gst.MessageType.EOS:
            break
        if m.type == Gst.MessageType.ERROR:
            err, debug = m.parse_error()
            error = f"{err.message} {debug or ''}"
            break
        if m.type == Gst.MessageType.WARNING:
            warnings.append(m.parse_warning()[0].message)
            continue
        s = m.get_structure()
        if s.get_name() == "int8-calibrated":
            calibrated.append((len(out), s.get_string("status")))
        if s.get_name() == "ptm-classification":
            ids, scores = s.get_value("class-ids"), s.get_value("scores")
            out.append([v for _, v in sorted(zip(ids, scores))])
    if error is None:
        st = p.get_by_name("infer").get_property("stats")
        int8 = st.get_string("int8")
    p.set_state(Gst.State.NULL)
    return out, calibrated, warnings, error, int8


def relative(a, b):
    scale = max(abs(v) for v in a)
    return max(abs(x - y) for x, y in zip(a, b)) / max(scale, 1e-6)


def top1(v):
    return max(range(len(v)), key=lambda i: v[i])


def main():
    fixtures = sys.argv[1]
    Gst.init(None)
    for name, classes in (("resnet18", 1000), ("mobilenet_v2", 32), ("efficientnet_b0", 35)):
        model = f"{fixtures}/{name}.pth"
        f32, _, w32, e32, _ = run(model, classes)
        q, calibrated, w8, e8, int8 = run(model, classes, f"precision=int8 calibration-images={CALIBRATION}")
        check(e32 is None and e8 is None, f"{name}: both pipelines ran ({e32}, {e8})")
        check(len(f32) == FRAMES and len(q) == FRAMES and all(len(v) == classes for v in f32 + q),
              f"{name}: {len(f32)} and {len(q)} frames with {classes} logits each")
        if len(f32) != FRAMES or len(q) != FRAMES:
            continue
        check(not w8, f"{name}: int8 without warning ({w8[:1]})")
        check(calibrated == [(CALIBRATION - 1, "int8")],
              f"{name}: one int8-calibrated message, 'int8', with frame {CALIBRATION} ({calibrated})")
        check(int8 == "int8", f"{name}: stats say int8 ({int8})")
        early = max(relative(a, b) for a, b in zip(f32[:CALIBRATION], q[:CALIBRATION]))
        check(early <= 1e-4, f"{name}: calibration frames have fp32's logits ({early:.6f})")
        late = [relative(a, b) for a, b in zip(f32[CALIBRATION:], q[CALIBRATION:])]
        agree = sum(top1(a) == top1(b) for a, b in zip(f32[CALIBRATION:], q[CALIBRATION:]))
        print(f"{name}: int8 logits within {max(late):.4f} of the largest fp32 logit (median "
              f"{sorted(late)[len(late) // 2]:.4f}); top-1 the same on {agree} of {len(late)} frames", flush=True)
        check(max(late) <= TOLERANCE, f"{name}: int8 logits within {TOLERANCE} of fp32's ({max(late):.4f})")
        check(min(late) > 1e-4, f"{name}: int8 ran (every frame after calibration differs: {min(late):.6f})")

    # A folder of photographs (and a file that is not one).
    folder = tempfile.mkdtemp(prefix="ptm-int8-")
    try:
        photos = sorted(f for f in os.listdir(DATA) if f.endswith(".jpg"))[:12]
        for f in photos:
            os.symlink(f"{DATA}/{f}", f"{folder}/{f}")
        with open(f"{folder}/README.txt", "w") as f:
            f.write("not an image\n")
        model = f"{fixtures}/resnet18.pth"
        f32, _, _, _, _ = run(model, 1000)
        q, calibrated, w8, e8, int8 = run(model, 1000, f"precision=int8 calibration={folder}")
        check(e8 is None and len(q) == FRAMES, f"folder: ran ({e8}, {len(q)} frames)")
        check(not w8, f"folder: no warning ({w8[:1]})")
        check(calibrated == [(0, "int8")], f"folder: int8 from the first frame ({calibrated})")
        check(int8 == "int8", f"folder: stats say int8 ({int8})")
        if q and f32:
            first = relative(f32[0], q[0])
            check(1e-4 < first <= TOLERANCE, f"folder: the first frame is int8's ({first:.4f})")
        empty = tempfile.mkdtemp(prefix="ptm-int8-empty-")
        for where, says in ((f"{folder}/absent", "absent"), (empty, "has no image")):
            out, _, _, err, _ = run(model, 1000, f"precision=int8 calibration={where}")
            check(err is not None and says in err and not out, f"folder {where}: the element fails saying so ({err})")
        os.rmdir(empty)
    finally:
        shutil.rmtree(folder)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all int8 checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
