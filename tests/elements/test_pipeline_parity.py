#!/usr/bin/env python3
"""End-to-end parity: a real video decoded by GStreamer goes through
ptmpreprocess ! ptminfer; the same decoded frames go through the canonical
Python loop (PIL + torchvision transforms + eval forward under no_grad).
Every frame's full logit vector must match (max |diff| <= 1e-4 x
max(1, max |logit|)) and the top-5 must be identical.

Also runs the Python embedding example (pipelines/classify.py) and checks
what it reads.

    test_pipeline_parity.py FIXTURES_DIR REPO_DIR
"""
import json
import os
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402
import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
FRAMES = 6
MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]
TRANSFORMS = {  # torchvision's IMAGENET1K_V1 eval transforms
    "resnet18": (256, 224, T.InterpolationMode.BILINEAR),
    "mobilenet_v3_small": (256, 224, T.InterpolationMode.BILINEAR),
    "efficientnet_b0": (256, 224, T.InterpolationMode.BICUBIC),
}


def pipeline_results(model_path, classes, resize, crop, interp, with_preprocess, extra="", frames_wanted=FRAMES,
                     names=None, pre=None, warnings=None):
    """The first frames of VIDEO as the appsink saw them, and ptminfer's
    full logit vector for each (and, in `names`, its class ids and labels;
    in `warnings`, the warning messages). `pre` replaces the ptmpreprocess
    made from resize/crop/interp."""
    if pre is not None:
        pass
    elif not with_preprocess:
        pre = ""
    else:
        pre = (f"ptmpreprocess resize={resize} size={crop} "
               f"interpolation={'bicubic' if interp == T.InterpolationMode.BICUBIC else 'bilinear'} ! ")
    # The frames the Python loop sees are taken before the overlay draws on them.
    desc = (f'filesrc location="{VIDEO}" ! decodebin ! videoconvert ! capsfilter name=limit caps=video/x-raw,format=RGB ! '
            f"tee name=t t. ! queue ! appsink name=out sync=false "
            f"t. ! queue ! {pre}"
            f'ptminfer model="{model_path}" output=logits top-k={classes} {extra} ! ptmoverlay ! fakesink sync=false')
    p = Gst.parse_launch(desc)
    classify.stop_after(p.get_by_name("limit").get_static_pad("src"), frames_wanted)
    sink = p.get_by_name("out")
    bus = p.get_bus()
    p.set_state(Gst.State.PLAYING)
    # Prerolled first: ptminfer loads its model before any frame flows.
    p.get_state(300 * Gst.SECOND)
    frames, logits = [], {}
    while True:
        sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if sample is None:
            break
        w, h = classify.caps_size(sample.get_caps())
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        stride = (w * 3 + 3) // 4 * 4
        img = Image.frombuffer("RGB", (w, h), bytes(info.data), "raw", "RGB", stride, 1).copy()
        buf.unmap(info)
        frames.append(img)
    while True:  # until the inference branch is done too
        msg = bus.timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                     | Gst.MessageType.ELEMENT | Gst.MessageType.WARNING)
        if msg is None or msg.type == Gst.MessageType.EOS:
            break
        if msg.type == Gst.MessageType.WARNING:
            if warnings is not None:
                warnings.append(msg.parse_warning()[0].message)
            continue
        if msg.type == Gst.MessageType.ERROR:
            p.set_state(Gst.State.NULL)
            err, debug = msg.parse_error()
            raise RuntimeError(f"{err.message} ({debug})")
        s = msg.get_structure()
        if msg.type == Gst.MessageType.ELEMENT and s.get_name() == "ptm-classification":
            vec = np.zeros(classes, dtype=np.float64)
            for i, v in zip(s.get_value("class-ids"), s.get_value("scores")):
                vec[i] = v
            logits[s.get_value("frame")] = vec
            if names is not None:
                names[s.get_value("frame")] = (list(s.get_value("class-ids")), list(s.get_value("labels")))
    p.set_state(Gst.State.NULL)
    return frames, logits


# Models run at other resolutions: through an explicit ptmpreprocess size
# (ptminfer takes the tensors' size), through ptminfer's input-size alone,
# and an explicit ptminfer size that an upstream tensor does not fit (the
# frames are preprocessed again at it, with one warning saying so).
SIZE_CASES = [  # (ptmpreprocess, ptminfer extra, size the model must run at, warning expected)
    ("ptmpreprocess size=64 ! ", "", 64, False),
    ("", "input-size=64", 64, False),
    ("ptmpreprocess size=384 ! ", "", 384, False),
    ("", "input-size=384", 384, False),
    ("ptmpreprocess size=64 ! ", "input-size=96", 96, True),
]


def worst_error(model, tf, frames, logits):
    """The largest max |diff| / max(1, max |logit|) of ptminfer's logits
    against the Python loop (model on tf(frame)) over the frames; 1.0 for a
    frame without a result."""
    worst = 0.0
    for i, img in enumerate(frames):
        if i not in logits:
            return 1.0
        with torch.no_grad():
            ref = model(tf(img).unsqueeze(0))[0].double().numpy()
        worst = max(worst, np.abs(logits[i] - ref).max() / max(1.0, np.abs(ref).max()))
    return worst


def other_sizes(fixtures, nc):
    path = os.path.join(fixtures, "resnet18.pth")
    model = torchvision.models.resnet18(weights=None, num_classes=nc)
    model.load_state_dict(torch.load(path))
    model.eval()
    failures = 0
    for pre, extra, size, warn in SIZE_CASES:
        # torchvision's eval transform keeps the 256/224 proportion: 64 -> 73, 384 -> 439.
        resize = round(size * 256 / 224)
        tf = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        warnings = []
        frames, logits = pipeline_results(path, nc, 0, 0, None, False, extra=extra, pre=pre, warnings=warnings)
        what = f"{pre}ptminfer {extra}".strip()
        if len(frames) != FRAMES or len(logits) != FRAMES:
            print(f"FAIL {what}: {len(frames)} frames, {len(logits)} results, want {FRAMES}")
            failures += 1
            continue
        worst = worst_error(model, tf, frames, logits)
        told = [w for w in warnings if "not used" in w]
        if worst > 1e-4 or (len(told) == 1) != warn:
            print(f"FAIL {what}: rel. max diff {worst:.2e} against torchvision at {resize}/{size}; warnings {warnings}")
            failures += 1
        else:
            print(f"ok   {what:45s} runs at {size}x{size} (resize {resize}): rel. max diff {worst:.2e}"
                  + (f"; warned once: {told[0]}" if warn else ""))
    return failures


def fixed_size(fixtures, nc):
    """A ViT takes only the size its position table was made for: an
    explicit other size is an error naming both sizes; an upstream tensor of
    another size is not used (one warning says so) and the frame is
    preprocessed at the model's own size, as torchvision would."""
    path = os.path.join(fixtures, "vit_b_32.pth")
    failures = 0
    try:
        pipeline_results(path, nc, 0, 0, None, False, extra="input-size=64", pre="")
        print("FAIL vit_b_32 input-size=64: no error")
        failures += 1
    except RuntimeError as e:
        if not all(part in str(e) for part in ("vit_b_32", "64x64", "224x224")):
            print(f"FAIL vit_b_32 input-size=64: the error does not name the model and both sizes: {e}")
            failures += 1
        else:
            print(f"ok   ptminfer vit_b_32 input-size=64 refused: {e}")
    model = torchvision.models.vit_b_32(weights=None, num_classes=nc)
    model.load_state_dict(torch.load(path))
    model.eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    warnings = []
    frames, logits = pipeline_results(path, nc, 0, 0, None, False, pre="ptmpreprocess size=64 ! ", warnings=warnings,
                                      frames_wanted=3)
    worst = worst_error(model, tf, frames, logits)
    told = [w for w in warnings if "not used" in w]
    if len(frames) != 3 or len(logits) != 3 or worst > 1e-4 or len(told) != 1:
        print(f"FAIL ptmpreprocess size=64 ! ptminfer vit_b_32: {len(frames)} frames, {len(logits)} results, "
              f"rel. max diff {worst:.2e}; warnings {warnings}")
        failures += 1
    else:
        print(f"ok   ptmpreprocess size=64 ! ptminfer vit_b_32: runs at 224x224, rel. max diff {worst:.2e}; "
              f"warned once: {told[0]}")
    return failures


def main():
    global classify
    fixtures, repo = sys.argv[1], sys.argv[2]
    # The Python embedding example: its stop_after() limits the frames here
    # too, and it is run itself below.
    sys.path.insert(0, os.path.join(repo, "pipelines"))
    import classify
    Gst.init(None)
    torch.set_num_threads(os.cpu_count() or 1)
    manifest = json.load(open(os.path.join(fixtures, "manifest.json")))
    classes_of = {m["architecture"]: m["num_classes"] for m in manifest["models"]}
    failures = 0
    for name in MODELS:
        path = os.path.join(fixtures, name + ".pth")
        nc = classes_of[name]
        resize, crop, interp = TRANSFORMS[name]
        model = getattr(torchvision.models, name)(weights=None, num_classes=nc)
        model.load_state_dict(torch.load(path))
        model.eval()
        tf = T.Compose([T.Resize(resize, interpolation=interp), T.CenterCrop(crop), T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        for with_pre in (True, False):
            frames, logits = pipeline_results(path, nc, resize, crop, interp, with_pre)
            if len(frames) != FRAMES or len(logits) != FRAMES:
                print(f"FAIL {name}: {len(frames)} frames, {len(logits)} results, want {FRAMES}")
                failures += 1
                continue
            worst = 0.0
            for i, img in enumerate(frames):
                with torch.no_grad():
                    ref = model(tf(img).unsqueeze(0))[0].double().numpy()
                got = logits[i]
                err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
                worst = max(worst, err)
                same_top5 = list(np.argsort(-got)[:5]) == list(np.argsort(-ref)[:5])
                if err > 1e-4 or not same_top5:
                    print(f"FAIL {name} frame {i}: rel. max diff {err:.2e}, top-5 same: {same_top5}")
                    failures += 1
            print(f"ok   {name:20s} {'ptmpreprocess ! ' if with_pre else '                '}ptminfer: "
                  f"{FRAMES} frames of {os.path.basename(VIDEO)}, full logits rel. max diff {worst:.2e}, "
                  f"top-5 identical")

    failures += other_sizes(fixtures, classes_of["resnet18"])
    failures += fixed_size(fixtures, classes_of["vit_b_32"])

    # The Python embedding example reads the same results from the bus.
    res = classify.classify(os.path.join(fixtures, "resnet18.pth"), VIDEO, frames=5, top_k=3)
    if len(res) != 5 or any(len(r["labels"]) != 3 or not r["labels"][0] for r in res):
        print("FAIL classify.py example:", res)
        failures += 1
    else:
        print(f"ok   pipelines/classify.py read {len(res)} frames, e.g. frame 0: {res[0]['labels'][0]}")
    print(f"{3 * 2 + 1 + len(SIZE_CASES) + 2 - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
