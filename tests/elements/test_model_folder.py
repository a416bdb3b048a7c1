#!/usr/bin/env python3
"""A hub-style model folder as timm saves it (weights + config.json with
label names, a non-ImageNet mean/std, 160x160 input, crop_pct 0.9,
bicubic) runs in ptminfer with those labels and that preprocessing: the
logits equal timm's own (its eval transform and forward on the same
photograph), alone, behind an unconfigured ptmpreprocess (which follows the
model), and with input-size overriding the config. ptm-inspect says what
it took from the config.

    test_model_folder.py HUB_FIXTURES_DIR PTM_INSPECT
"""
import json
import os
import subprocess
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402
import numpy as np  # noqa: E402


def run(folder, photo, pre, extra, classes):
    desc = (f'filesrc location="{photo}" ! pngdec ! videoconvert ! video/x-raw,format=RGB ! {pre}'
            f'ptminfer model="{folder}" output=logits top-k={classes} {extra} ! fakesink')
    p = Gst.parse_launch(desc)
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    out = None
    while True:
        msg = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                     | Gst.MessageType.ELEMENT)
        if msg is None or msg.type == Gst.MessageType.EOS:
            break
        if msg.type == Gst.MessageType.ERROR:
            p.set_state(Gst.State.NULL)
            raise RuntimeError(msg.parse_error()[0].message)
        s = msg.get_structure()
        if s.get_name() == "ptm-classification":
            vec = np.zeros(classes)
            for i, v in zip(s.get_value("class-ids"), s.get_value("scores")):
                vec[i] = v
            out = (vec, dict(zip(s.get_value("class-ids"), s.get_value("labels"))))
    p.set_state(Gst.State.NULL)
    return out


def main():
    fixtures, inspect = sys.argv[1], sys.argv[2]
    Gst.init(None)
    ref = json.load(open(os.path.join(fixtures, "hub.json")))
    folder, photo = os.path.join(fixtures, "hub_resnet18"), os.path.join(fixtures, "hub_photo.png")
    labels = ref["labels"]
    runs = {r["input_size"]: r for r in ref["runs"]}
    cases = [("ptminfer alone", "", "", 160),
             ("unconfigured ptmpreprocess ! ptminfer", "ptmpreprocess ! ", "", 160),
             ("ptminfer input-size=128 (overrides the config)", "", "input-size=128", 128)]
    failures = 0
    for what, pre, extra, size in cases:
        got = run(folder, photo, pre, extra, len(labels))
        want = np.array(runs[size]["logits"])
        if got is None:
            print(f"FAIL {what}: no result")
            failures += 1
            continue
        vec, names = got
        err = np.abs(vec - want).max() / max(1.0, np.abs(want).max())
        same_labels = all(names[i] == labels[i] for i in names)
        if err > 1e-4 or list(np.argsort(-vec)[:5]) != list(np.argsort(-want)[:5]) or not same_labels:
            print(f"FAIL {what}: rel. max diff {err:.2e} against timm {ref['timm']} ({runs[size]['transform']}); "
                  f"labels {names}")
            failures += 1
        else:
            print(f"ok   {what:48s} rel. max diff {err:.2e} against timm {ref['timm']} at {size}, labels from "
                  f"config.json (top: {names[int(np.argmax(vec))]})")
    text = subprocess.run([inspect, folder], capture_output=True, text=True).stdout
    want_line = "input 160, resize 177, bicubic, mean 0.5, 0.45, 0.4, std 0.25, 0.3, 0.35"
    if want_line not in text or "7, e.g. 'cat'" not in text or "architecture: resnet18" not in text:
        print("FAIL ptm-inspect of the folder printed:\n" + text)
        failures += 1
    else:
        print("ok   ptm-inspect reads the folder's config: " + want_line)
    print(f"{len(cases) + 1 - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
