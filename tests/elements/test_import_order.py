#!/usr/bin/env python3
"""A Python application may import torch before GStreamer (or after): ptm's
C++ errors must never take the process down. libgstreamer links libunwind,
libstdc++ libgcc_s; with torch imported first libstdc++ is bound to
libgcc_s before libunwind enters the process, and a library bound to the
other unwinder aborts on the first C++ exception (plugin/plugin.c).

Each order runs in a child process that triggers element errors (a missing
file, a corrupt one, a model named by a property while playing that cannot
load), reloads a good model live, classifies, and must exit with status 0.

    test_import_order.py FIXTURES_DIR
"""
import os
import subprocess
import sys
import tempfile

CHILD = r'''
import sys
order, fixtures, corrupt = sys.argv[1:4]
if order == "torch-first":
    import torch
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
if order == "gst-first":
    import torch
Gst.init(None)

SRC = "videotestsrc num-buffers=%d ! video/x-raw,format=RGB,width=96,height=64"


def run(desc, buffers=3, during=None):
    p = Gst.parse_launch(desc % buffers)
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    errors, classified = [], 0
    while True:
        m = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR |
                                   Gst.MessageType.ELEMENT | Gst.MessageType.WARNING)
        if m is None:
            errors.append("timeout")
            break
        if m.type == Gst.MessageType.ERROR:
            errors.append(m.parse_error()[0].message)
            break
        if m.type == Gst.MessageType.EOS:
            break
        if m.type == Gst.MessageType.ELEMENT and m.get_structure().get_name() == "ptm-classification":
            classified += 1
            if during and classified == 1:
                during(p)
    p.set_state(Gst.State.NULL)
    return errors, classified


errors, _ = run(SRC + " ! ptminfer model=/nonexistent/model.pth ! fakesink")
assert errors and "nonexistent" in errors[0], errors
errors, _ = run(SRC + " ! ptminfer model=" + corrupt + " ! fakesink")
assert errors, "a corrupt model loaded"
# A LibTorch error thrown and caught inside LibTorch, then ptm's own.
try:
    torch.zeros(2).view(3)
    raise SystemExit("torch accepted a bad view")
except RuntimeError:
    pass

good = fixtures + "/mobilenet_v3_small.pth"
reloads = []


def swap(p):
    inf = p.get_by_name("inf")
    inf.set_property("model", corrupt)  # refused: the running model keeps serving
    inf.set_property("model", good)
    reloads.append(True)


errors, classified = run(SRC + " ! ptminfer name=inf model=" + good + " ! fakesink", buffers=40, during=swap)
assert not errors, errors
assert reloads and classified == 40, (reloads, classified)
print(order, "ok: errors reported, model reloaded, 40 frames classified")
'''


def main():
    fixtures = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        corrupt = os.path.join(tmp, "corrupt.pth")
        with open(os.path.join(fixtures, "resnet18.pth"), "rb") as f:
            data = f.read(200000)  # the zip's start: its directory is gone
        with open(corrupt, "wb") as f:
            f.write(data)
        failed = 0
        for order in ("torch-first", "gst-first"):
            p = subprocess.run([sys.executable, "-c", CHILD, order, fixtures, corrupt], capture_output=True,
                               text=True, timeout=600)
            out = (p.stdout + p.stderr).strip()
            if p.returncode != 0:
                failed += 1
                print("FAIL %s: exit status %d\n%s" % (order, p.returncode, out[-3000:]))
            else:
                print(out.splitlines()[-1] if out else order + " ok")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
