#!/usr/bin/env python3
"""Reduced precision on trained weights: top-1 agreement of ptminfer's
precision=bf16 and precision=int8 with its fp32, on real images the model
has never seen, through the whole pipeline.

No trained ImageNet weights are reachable from this project's machines
(only Debian's archive and PyPI), and the fixtures' random weights leave
classes a hair apart (a median top-1/top-2 margin under 1 % of the largest
logit): any rounding flips them. So this benchmark trains the torchvision
architecture itself, on OpenCV's handwritten digits (opencv-doc's
digits.png: 5,000 photographed 20x20 digits, 500 a class): 4,000 for
training (from scratch, SIZE x SIZE input, a few epochs on the CPU, cached
in OUT), 1,000 held out. The held-out digits then go through
appsrc ! ptminfer input-size=SIZE precision=... ! fakesink (the model's
eval transform upscales them) in fp32, bf16 (CPUs with AVX-512 BF16 or
AMX) and int8 (calibrated on a folder of 32 training digits), and the
table gives each precision's accuracy, its top-1 agreement with fp32 and
how far its logits are from fp32's (median over the digits of the largest
difference, relative to the largest fp32 logit), fp32's median margin
between the top two classes (same scale), and the median forward pass
(ptminfer's own timing) with its ratio to fp32's.

    bench_agreement.py [--models resnet18,resnet50] [--size 112] [--epochs 2]
                       [--threads 2] [--out DIR]
"""
import argparse
import json
import os
import sys
import tempfile

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

DIGITS = "/usr/share/doc/opencv-doc/examples/data/digits.png"
CELL = 20


def digits():
    """The 5,000 digits as 20x20 RGB bytes, and their labels."""
    from PIL import Image
    img = Image.open(DIGITS).convert("L")
    cols, rows = img.width // CELL, img.height // CELL
    cells, labels = [], []
    for r in range(rows):
        for c in range(cols):
            cell = img.crop((c * CELL, r * CELL, (c + 1) * CELL, (r + 1) * CELL)).convert("RGB")
            cells.append(cell.tobytes())
            labels.append(r // (rows // 10))
    return cells, labels


def transform(size):
    """ptminfer's eval transform at input-size SIZE (torchvision's 256/224)."""
    import torchvision.transforms as T
    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def train(name, cells, labels, size, epochs, path):
    import torch
    import torchvision
    from PIL import Image
    torch.manual_seed(0)
    tf = transform(size)
    x = torch.stack([tf(Image.frombytes("RGB", (CELL, CELL), c)) for c in cells])
    y = torch.tensor(labels)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        print(f"  {name} epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}", flush=True)
    model.eval()
    tmp = path + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def classify(model, cells, size, threads, props):
    """Each cell's logits (by class) through the pipeline, the median forward
    pass (ptminfer's own timing, ms) and the int8 status."""
    results = tempfile.NamedTemporaryFile(prefix="ptm-agree-", suffix=".jsonl", delete=False).name
    p = Gst.parse_launch(f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={CELL},height={CELL},"
                         f"framerate=30/1 ! ptminfer name=infer model=\"{model}\" input-size={size} "
                         f"num-threads={threads} post-messages=false output=logits top-k=10 "
                         f"results-file={results} {props} ! "
                         f"fakesink sync=false")
    src = p.get_by_name("src")
    p.set_state(Gst.State.PLAYING)
    for i, c in enumerate(cells):
        b = Gst.Buffer.new_wrapped(c)
        b.pts = i * Gst.SECOND // 30
        src.emit("push-buffer", b)
    src.emit("end-of-stream")
    m = p.get_bus().timed_pop_filtered(600 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    if m is None or m.type == Gst.MessageType.ERROR:
        raise RuntimeError(m.parse_error()[0].message if m else "no EOS in 600 s")
    status = p.get_by_name("infer").get_property("stats").get_string("int8")
    p.set_state(Gst.State.NULL)
    logits, ms = [], []
    with open(results) as f:
        for line in f:
            v = [0.0] * 10
            doc = json.loads(line)
            ms.append(doc["inference_ms"])
            for r in doc["results"]:
                v[r["class"]] = r["score"]
            logits.append(v)
    os.unlink(results)
    if len(logits) != len(cells):
        raise RuntimeError(f"{len(logits)} of {len(cells)} digits classified")
    return logits, median(ms[8:] or ms), status


def top1(v):
    return max(range(len(v)), key=lambda i: v[i])


def median(values):
    return sorted(values)[len(values) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="agreement-out")
    a = ap.parse_args()
    import random

    import torch
    from PIL import Image
    torch.set_num_threads(a.threads)
    Gst.init(None)
    os.makedirs(a.out, exist_ok=True)
    cells, labels = digits()
    order = list(range(len(cells)))
    random.Random(0).shuffle(order)
    train_ids, test_ids = order[:4000], order[4000:]
    calibration = os.path.join(a.out, "calibration")
    os.makedirs(calibration, exist_ok=True)
    for i in train_ids[:32]:
        Image.frombytes("RGB", (CELL, CELL), cells[i]).save(os.path.join(calibration, f"digit{i:04d}.png"))
    flags = open("/proc/cpuinfo").read()
    bf16 = " avx512_bf16" in flags or " amx_bf16" in flags
    test = [cells[i] for i in test_ids]
    truth = [labels[i] for i in test_ids]
    print(f"{len(train_ids)} digits to train on, {len(test)} held out, input {a.size}x{a.size}, "
          f"torch {torch.__version__}, GStreamer {Gst.version_string()}", flush=True)
    lines = []
    for name in a.models.split(","):
        path = os.path.join(a.out, f"digits_{name}_{a.size}_{a.epochs}.pth")
        if not os.path.exists(path):
            train(name, [cells[i] for i in train_ids], [labels[i] for i in train_ids], a.size, a.epochs, path)
        f32, f32_ms, _ = classify(path, test, a.size, a.threads, "")
        rows = [("fp32", f32, f32_ms, "")]
        if bf16:
            # bfloat16 itself (a load keeps float32 where that runs faster)
            os.environ["PTM_BF16_ALWAYS"] = "1"
            try:
                b, b_ms, _ = classify(path, test, a.size, a.threads, "precision=bf16")
            finally:
                os.environ.pop("PTM_BF16_ALWAYS", None)
            rows.append(("bf16", b, b_ms, "bfloat16 forced (PTM_BF16_ALWAYS=1)"))
        q, q_ms, status = classify(path, test, a.size, a.threads, f"precision=int8 calibration={calibration}")
        rows.append(("int8", q, q_ms, status))
        scale = [max(abs(x) for x in v) or 1.0 for v in f32]
        margin = median([(sorted(v)[-1] - sorted(v)[-2]) / s for v, s in zip(f32, scale)])
        for precision, logits, ms, note in rows:
            accuracy = sum(top1(v) == y for v, y in zip(logits, truth))
            agree = sum(top1(v) == top1(f) for v, f in zip(logits, f32))
            diff = median([max(abs(x - y) for x, y in zip(v, f)) / s for v, f, s in zip(logits, f32, scale)])
            line = (f"{name} {precision}: accuracy {accuracy}/{len(test)} ({100 * accuracy / len(test):.1f} %), "
                    f"top-1 as fp32 on {agree}/{len(test)} ({100 * agree / len(test):.1f} %), logits off fp32's "
                    f"by {diff:.4f} (median; fp32's top-2 margin {margin:.3f}); forward {ms:.2f} ms "
                    f"({f32_ms / ms:.2f}x fp32's)"
                    + (f" [{note}]" if note else ""))
            print(line, flush=True)
            lines.append(line)
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
