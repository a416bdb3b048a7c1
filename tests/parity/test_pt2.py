#!/usr/bin/env python3
"""AOTInductor packages end to end: tools/ptm-export turns checkpoints into
.pt2 packages (resnet18 and efficientnet_b0 from the fixtures, and a
7-class vit_b_16 with labels beside it, all read by ptm),
ptm-inspect reads their metadata without running them, and a real video
through `ptminfer model=x.pt2` gives torchvision's eval logits for every
frame (max |diff| <= 1e-4 x max(1, max |logit|), top-5 identical) with the
labels carried in the package, in batches of 1 and of 3 (vit_b_16: 3).

    test_pt2.py FIXTURES_DIR OUT_DIR REPO_DIR PTM_INSPECT
"""
import json
import os
import subprocess
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402
import numpy as np
import torch
import torchvision
import torchvision.transforms as T

FRAMES = 4


def run_pipeline(pt2, classes, batch, interp):
    names = {}
    frames, logits = pipeline_results(pt2, classes, 0, 0, interp, False, extra=f"batch-size={batch}",
                                      frames_wanted=FRAMES, names=names)
    return frames, {i: (logits[i],) + names[i] for i in logits}


def main():
    global pipeline_results
    fixtures, out, repo, inspect = sys.argv[1:5]
    sys.path.insert(0, os.path.join(repo, "tests", "elements"))
    import test_pipeline_parity
    sys.path.insert(0, os.path.join(repo, "pipelines"))
    import classify
    test_pipeline_parity.classify = classify
    pipeline_results = test_pipeline_parity.pipeline_results
    os.makedirs(out, exist_ok=True)
    Gst.init(None)
    torch.manual_seed(0)
    manifest = json.load(open(os.path.join(fixtures, "manifest.json")))
    classes_of = {m["architecture"]: m["num_classes"] for m in manifest["models"]}
    export = os.path.join(repo, "tools", "ptm-export")
    failures = passed = 0

    cases = []
    # resnet18 with a labels file given to the exporter.
    labels = [f"resnet label {i}" for i in range(classes_of["resnet18"])]
    with open(os.path.join(out, "resnet18-names.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    cases.append(("resnet18", os.path.join(fixtures, "resnet18.pth"),
                  ["--labels", os.path.join(out, "resnet18-names.txt")], labels, (256, 224, "bilinear")))
    # efficientnet_b0: no labels (class N names unless 1000 classes).
    n = classes_of["efficientnet_b0"]
    cases.append(("efficientnet_b0", os.path.join(fixtures, "efficientnet_b0.pth"), [],
                  None if n == 1000 else [f"class {i}" for i in range(n)], (256, 224, "bicubic")))
    # vit_b_16: a transformer, labels beside the checkpoint.
    vit = torchvision.models.vit_b_16(weights=None, num_classes=7)
    with torch.no_grad():  # not the zero-initialised head torchvision starts with
        vit.heads.head.weight.normal_(0, 0.02)
        vit.heads.head.bias.normal_(0, 0.02)
    vit_path = os.path.join(out, "vit_b_16.pth")
    torch.save(vit.state_dict(), vit_path)
    vit_labels = ["cat", "dog", "bird", "fish", "horse", "frog", "ship"]
    with open(os.path.join(out, "vit_b_16.labels.txt"), "w") as f:
        f.write("\n".join(vit_labels) + "\n")
    cases.append(("vit_b_16", vit_path, ["--arch", "vit_b_16"], vit_labels, (256, 224, "bilinear")))

    for name, ckpt, extra, want_labels, (resize, crop, interp) in cases:
        pt2 = os.path.join(out, name + ".pt2")
        cmd = [sys.executable, export, ckpt, "-o", pt2, "--batch", "3", "--ptm-inspect", inspect] + extra
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(r.stdout.strip())
        if r.returncode != 0:
            print(f"FAIL {name}: ptm-export: {r.stderr.strip()[-2000:]}")
            failures += 1
            continue
        r = subprocess.run([inspect, pt2], capture_output=True, text=True)
        if r.returncode != 0 or "aotinductor-package" not in r.stdout or f"ptm.architecture = {name}" not in r.stdout:
            print(f"FAIL {name}: ptm-inspect on the package:\n{r.stdout}{r.stderr}")
            failures += 1
        else:
            passed += 1
        classes = len(want_labels) if want_labels else 1000
        model = torchvision.models.get_model(name, weights=None, num_classes=classes)
        if name == "vit_b_16":
            model = vit
        else:
            model.load_state_dict(torch.load(ckpt, weights_only=True))
        model.eval()
        mode = T.InterpolationMode.BICUBIC if interp == "bicubic" else T.InterpolationMode.BILINEAR
        tf = T.Compose([T.Resize(resize, interpolation=mode), T.CenterCrop(crop), T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        for batch in ((1, 3) if name != "vit_b_16" else (3,)):
            try:
                frames, results = run_pipeline(pt2, classes, batch, mode)
            except RuntimeError as e:
                print(f"FAIL {name} batch {batch}: {e}")
                failures += 1
                continue
            if len(frames) != FRAMES or any(i not in results for i in range(FRAMES)):
                print(f"FAIL {name} batch {batch}: {len(frames)} frames, results for {sorted(results)}")
                failures += 1
                continue
            worst, bad = 0.0, 0
            for i, img in enumerate(frames):
                with torch.no_grad():
                    ref = model(tf(img).unsqueeze(0))[0].double().numpy()
                got, ids, got_labels = results[i]
                err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
                worst = max(worst, err)
                same_top5 = list(np.argsort(-got)[:5]) == list(np.argsort(-ref)[:5])
                names_ok = want_labels is None or got_labels == [want_labels[c] for c in ids]
                if err > 1e-4 or not same_top5 or not names_ok:
                    print(f"FAIL {name} batch {batch} frame {i}: rel. max diff {err:.2e}, top-5 same: {same_top5}, "
                          f"labels right: {names_ok} ({got_labels[:2]})")
                    bad += 1
            if bad:
                failures += 1
            else:
                passed += 1
                print(f"ok   {name:16s} .pt2 through ptminfer batch-size={batch}: {FRAMES} frames, full logits "
                      f"rel. max diff {worst:.2e}, top-5 identical, labels {got_labels[0]!r}...")
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
