#!/usr/bin/env python3
"""Pipeline benchmark, side by side on the same decoded frames:

  - the ptm pipeline: appsrc (1280x720 RGB frames) ! ptminfer ! fakesink
    (preprocessing + inference, batch 1), frames per second;
  - LibTorch forward only, the same model and batch, as ptminfer measured it
    for each frame in that same run (inference-ns of its messages);
  - the canonical Python torchvision loop: PIL Resize/CenterCrop/ToTensor/
    Normalize + eval forward under no_grad.

    bench_pipeline.py FIXTURES_DIR [ARCH] [FRAMES]
"""
import json
import os
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
W, H = 1280, 720


def decode(n):
    p = Gst.parse_launch(f'filesrc location="{VIDEO}" ! decodebin ! videoconvert ! videoscale ! '
                         f"video/x-raw,format=RGB,width={W},height={H} ! appsink name=out sync=false")
    sink = p.get_by_name("out")
    p.set_state(Gst.State.PLAYING)
    frames = []
    while len(frames) < n:
        s = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if s is None:
            break
        buf = s.get_buffer()
        frames.append(buf.extract_dup(0, buf.get_size()))
    p.set_state(Gst.State.NULL)
    return frames


def run_pipeline(frames, model):
    p = Gst.parse_launch(f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},"
                         f'framerate=30/1 ! ptminfer model="{model}" ! fakesink sync=false')
    src = p.get_by_name("src")
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        b = Gst.Buffer.new_wrapped(f)
        b.pts = i * Gst.SECOND // 30
        src.emit("push-buffer", b)
    src.emit("end-of-stream")
    infer_ns = []
    while True:
        m = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR | Gst.MessageType.ELEMENT)
        if m is None or m.type == Gst.MessageType.EOS:
            break
        if m.type == Gst.MessageType.ERROR:
            raise RuntimeError(m.parse_error()[0].message)
        s = m.get_structure()
        if s.get_name() == "ptm-classification":
            infer_ns.append(s.get_value("inference-ns"))
    elapsed = time.perf_counter() - t0
    p.set_state(Gst.State.NULL)
    return len(frames) / elapsed, infer_ns


def python_loop(frames, arch, path, classes):
    model = getattr(torchvision.models, arch)(weights=None, num_classes=classes)
    model.load_state_dict(torch.load(path))
    model.eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        model(tf(Image.frombytes("RGB", (W, H), frames[0])).unsqueeze(0))  # warm-up
        t0 = time.perf_counter()
        for f in frames:
            model(tf(Image.frombytes("RGB", (W, H), f)).unsqueeze(0))
        return len(frames) / (time.perf_counter() - t0)


def main():
    fixtures = sys.argv[1]
    arch = sys.argv[2] if len(sys.argv) > 2 else "resnet18"
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 120
    Gst.init(None)
    manifest = json.load(open(os.path.join(fixtures, "manifest.json")))
    classes = {m["architecture"]: m["num_classes"] for m in manifest["models"]}[arch]
    path = os.path.join(fixtures, arch + ".pth")
    frames = decode(n)
    run_pipeline(frames[:5], path)  # warm caches
    fps, infer_ns = run_pipeline(frames, path)
    infer_ns = sorted(infer_ns[3:])  # the first calls warm the graph
    forward_fps = 1e9 / infer_ns[len(infer_ns) // 2]
    py_fps = python_loop(frames, arch, path, classes)
    print(f"{arch}, {len(frames)} frames {W}x{H} RGB from {os.path.basename(VIDEO)}, batch 1, "
          f"{torch.get_num_threads()} threads")
    print(f"{'':34s} {'fps':>8s} {'vs Python loop':>15s}")
    print(f"{'ptm pipeline (preprocess+infer)':34s} {fps:8.1f} {fps / py_fps:14.2f}x")
    print(f"{'LibTorch forward only (median)':34s} {forward_fps:8.1f} {forward_fps / py_fps:14.2f}x")
    print(f"{'Python torchvision loop (PIL)':34s} {py_fps:8.1f} {1.0:14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
