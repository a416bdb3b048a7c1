#!/usr/bin/env python3
"""ptmtrainsink end to end.

- Learning: frames of 4 videotestsrc patterns (4 classes) go through one
  pipeline into ptmtrainsink (labels as "ptm-label" events); the written
  model is then used by ptminfer on other runs of the patterns (other
  speed, size and start) and must reach >= 95 % accuracy. The same recipe in
  Python (same backbone weights, same features, same hyperparameters) is
  trained on the same frames and evaluated the same way; both are printed.
- Interop: the written file loads in torchvision with strict=True and gives
  ptminfer's logits (<= 1e-4).
- Reproducibility: the same seed and input give identical weights.
- Bad situations: one class only, no output path: errors, and an existing
  output file is left untouched.

    test_trainsink.py FIXTURES_DIR OUT_DIR
"""
import json
import os
import shutil
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "pipelines"))
import classify  # noqa: E402  (caps_size)

PATTERNS = ["smpte", "checkers-8", "circular", "ball"]
RECIPE = dict(epochs=40, learning_rate=1e-3, batch_size=16, seed=7)




def run(desc, label_pads=None, collect=None):
    """Runs to EOS; returns (messages, frames per pattern if collect)."""
    p = Gst.parse_launch(desc)
    frames = {k: [] for k in PATTERNS}

    def on_buffer(pad, info, label):
        if not getattr(pad, "_labelled", False):
            pad._labelled = True
            pad.push_event(Gst.Event.new_custom(Gst.EventType.CUSTOM_DOWNSTREAM,
                                                Gst.Structure.new_from_string(f'ptm-label, label="{label}"')))
        if collect is not None:
            buf = info.get_buffer()
            w, h = classify.caps_size(pad.get_current_caps())
            ok, m = buf.map(Gst.MapFlags.READ)
            frames[label].append(Image.frombuffer("RGB", (w, h), bytes(m.data), "raw", "RGB", (w * 3 + 3) // 4 * 4, 1).copy())
            buf.unmap(m)
        return Gst.PadProbeReturn.OK

    for label in label_pads or []:
        pad = p.get_by_name("src_" + label.replace("-", "_")).get_static_pad("src")
        pad.add_probe(Gst.PadProbeType.BUFFER, on_buffer, label)
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    msgs, error = [], None
    while True:
        m = bus.timed_pop_filtered(300 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                   | Gst.MessageType.ELEMENT | Gst.MessageType.WARNING)
        if m is None or m.type == Gst.MessageType.EOS:
            break
        if m.type == Gst.MessageType.ERROR:
            error = m.parse_error()[0].message
            break
        if m.type == Gst.MessageType.WARNING:
            msgs.append(("warning", m.parse_warning()[0].message))
        else:
            msgs.append((m.get_structure().get_name(), m.get_structure()))
    p.set_state(Gst.State.NULL)
    return msgs, error, frames


def sources(n, speed, w, h, offset):
    return " ".join(
        f"videotestsrc name=src_{pat.replace('-', '_')} pattern={pat} num-buffers={n} horizontal-speed={speed} "
        f"timestamp-offset={offset} ! video/x-raw,format=RGB,width={w},height={h} ! c. " for pat in PATTERNS)


def train(backbone, output, n=30, seed=RECIPE["seed"], collect=None, patterns=PATTERNS, extra=""):
    desc = (f"concat name=c ! videoconvert ! ptmtrainsink model={backbone} output={output} seed={seed} {extra} "
            f"epochs={RECIPE['epochs']} learning-rate={RECIPE['learning_rate']} batch-size={RECIPE['batch_size']} "
            + " ".join(
                f"videotestsrc name=src_{pat.replace('-', '_')} pattern={pat} num-buffers={n} horizontal-speed=2 "
                f"! video/x-raw,format=RGB,width=320,height=240 ! c. " for pat in patterns))
    return run(desc, patterns, collect)


def evaluate(model, labels, n=20):
    """Other runs of the patterns: speed 7, another size; accuracy through ptminfer."""
    desc = (f"concat name=c ! videoconvert ! ptminfer model={model} labels={labels} top-k=1 ! fakesink "
            + sources(n, 7, 400, 300, 0))
    msgs, error, frames = run(desc, PATTERNS, collect=True)
    assert error is None, error
    tops = [s.get_value("top-label") for name, s in msgs if name == "ptm-classification"]
    truth = [p for p in PATTERNS for _ in range(n)]
    return sum(a == b for a, b in zip(tops, truth)) / len(truth), frames


def main():
    fixtures, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    Gst.init(None)
    torch.set_num_threads(os.cpu_count() or 1)
    backbone = os.path.join(fixtures, "resnet18.pth")
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            failures.append(what)

    # Learning through the pipeline.
    model = os.path.join(out, "patterns.pth")
    export = os.path.join(out, "dataset")
    shutil.rmtree(export, ignore_errors=True)
    msgs, error, train_frames = train(backbone, model, collect=True, extra=f"export-dir={export} max-samples=25")
    check(error is None, f"training pipeline ran ({error})")
    done = [s for name, s in msgs if name == "ptm-training-done"]
    epochs = [s for name, s in msgs if name == "ptm-training"]
    check(len(done) == 1 and len(epochs) >= 1, f"progress and completion posted ({len(epochs)} epochs)")
    files = {d: len(os.listdir(os.path.join(export, d))) for d in sorted(os.listdir(export))}
    check(files == {p: 25 for p in sorted(PATTERNS)}, f"ImageFolder export, 25 kept a class: {files}")
    labels = os.path.join(out, "patterns.labels.txt")
    check(open(labels).read().split("\n")[:4] == sorted(PATTERNS), "labels file beside the output")
    acc, test_frames = evaluate(model, labels)

    # The same recipe in Python on the same frames.
    net = torchvision.models.resnet18(weights=None)
    net.load_state_dict(torch.load(backbone))
    net.fc = torch.nn.Identity()
    net.eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    classes = sorted(PATTERNS)

    def feats(frames):
        xs, ys = [], []
        with torch.no_grad():
            for lab, imgs in frames.items():
                for img in imgs:
                    xs.append(net(tf(img).unsqueeze(0))[0])
                    ys.append(classes.index(lab))
        return torch.stack(xs), torch.tensor(ys)

    xtr, ytr = feats(train_frames)
    xte, yte = feats(test_frames)
    torch.manual_seed(RECIPE["seed"])
    head = torch.nn.Linear(xtr.shape[1], len(classes))
    opt = torch.optim.Adam(head.parameters(), lr=RECIPE["learning_rate"])
    g = torch.Generator().manual_seed(RECIPE["seed"])
    for _ in range(RECIPE["epochs"]):
        for idx in torch.randperm(len(ytr), generator=g).split(RECIPE["batch_size"]):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(xtr[idx]), ytr[idx]).backward()
            opt.step()
    with torch.no_grad():
        py_acc = (head(xte).argmax(1) == yte).float().mean().item()
    print(f"held-out accuracy: ptm pipeline {acc * 100:.1f} %, Python recipe {py_acc * 100:.1f} % "
          f"({len(ytr)} training frames, {len(yte)} test frames)")
    check(acc >= 0.95, f"ptm accuracy {acc:.3f} >= 0.95")
    check(py_acc >= 0.9, f"Python recipe comparable ({py_acc:.3f})")

    # Interop: torchvision strict load, and ptminfer's logits.
    sd = torch.load(model)
    tv = torchvision.models.resnet18(num_classes=4)
    tv.load_state_dict(sd, strict=True)
    tv.eval()
    desc = (f"videotestsrc pattern=circular num-buffers=3 ! video/x-raw,format=RGB,width=320,height=240 ! tee name=t "
            f"t. ! queue ! appsink name=out sync=false t. ! queue ! ptminfer model={model} output=logits top-k=4 ! fakesink")
    p = Gst.parse_launch(desc)
    sink = p.get_by_name("out")
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    imgs = []
    while True:
        s = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if s is None:
            break
        b = s.get_buffer()
        ok, m = b.map(Gst.MapFlags.READ)
        imgs.append(Image.frombuffer("RGB", (320, 240), bytes(m.data), "raw", "RGB", 960, 1).copy())
        b.unmap(m)
    got = []
    while True:
        m = bus.timed_pop_filtered(30 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ELEMENT | Gst.MessageType.ERROR)
        if m is None or m.type != Gst.MessageType.ELEMENT:
            break
        s = m.get_structure()
        if s.get_name() != "ptm-classification":
            continue
        vec = np.zeros(4)
        for i, v in zip(s.get_value("class-ids"), s.get_value("scores")):
            vec[i] = v
        got.append(vec)
    p.set_state(Gst.State.NULL)
    with torch.no_grad():
        ref = [tv(tf(im).unsqueeze(0))[0].numpy() for im in imgs]
    err = max(np.abs(a - b).max() / max(1, np.abs(b).max()) for a, b in zip(got, ref)) if got else 1
    check(len(got) == 3 and err <= 1e-4, f"torchvision strict load; logits equal ptminfer's (rel. max diff {err:.1e})")

    # Reproducibility.
    again = os.path.join(out, "again.pth")
    train(backbone, again, extra="max-samples=25")  # same input and settings as the first run
    a, b = torch.load(model), torch.load(again)
    check(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "same seed and input: identical weights")

    # Bad situations leave an existing output untouched.
    before = open(model, "rb").read()
    msgs, error, _ = train(backbone, model, patterns=["ball"])
    check(error is not None and "only one label" in error and open(model, "rb").read() == before,
          f"one class only: error ({error}), output untouched")
    msgs, error, _ = train(backbone, "/nonexistent-dir/x.pth")
    check(error is not None and "/nonexistent-dir/x.pth" in error, f"unwritable output: error ({error})")

    print(f"{10 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
