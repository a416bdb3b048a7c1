#!/usr/bin/env python3
"""Region classification (ptminfer inference-region=roi-list) against
torchvision: real photos go through ptminfer with regions attached as
GstVideoRegionOfInterestMeta (as a detector upstream would); every region's
full logit vector must equal torchvision's on that crop of the photo
(PIL crop, the model's eval transform, eval forward): max |diff| <= 1e-4 x
max(1, max |logit|), identical top-5. Batches of regions (batch-size=4)
must give what one region at a time gives; object-class and
min-region-size choose the regions; the JSON lines carry each region.
And behind a real detector: the OpenCV plugin's facedetect (Debian's Haar
cascades) on a real photo; each face it finds is classified as
torchvision classifies that crop of the decoded frame.

    test_regions.py FIXTURES_DIR
"""
import json
import os
import sys
import tempfile

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import Gst, GstVideo  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

DATA = "/usr/share/doc/opencv-doc/examples/data"
PHOTOS = ["fruits.jpg", "baboon.jpg", "building.jpg"]
# (type, x, y, w, h) as fractions of the photo; the last one reaches past
# the right and bottom edges (clipped), the tiny one is below min-region-size.
REGIONS = [("face", 0.1, 0.15, 0.4, 0.5), ("person", 0.45, 0.05, 0.3, 0.7), ("face", 0.33, 0.4, 0.17, 0.23),
           ("car", 0.7, 0.6, 0.5, 0.6), ("face", 0.02, 0.02, 0.02, 0.02)]
MIN_SIZE = 24


def boxes_for(w, h):
    out = []
    for t, fx, fy, fw, fh in REGIONS:
        out.append((t, int(fx * w), int(fy * h), max(1, int(fw * w)), max(1, int(fh * h))))
    return out


def clip(box, w, h):
    t, x, y, bw, bh = box
    x0, y0 = min(max(x, 0), w), min(max(y, 0), h)
    x1, y1 = min(max(x + bw, 0), w), min(max(y + bh, 0), h)
    return t, x0, y0, x1 - x0, y1 - y0


def region_messages(p, timeout_s, classes):
    """The pipeline's ptm-region-classification messages until EOS, each as
    ((type, x, y, width, height), full score vector by class id, frame);
    raises on an error message."""
    bus = p.get_bus()
    out = []
    while True:
        msg = bus.timed_pop_filtered(timeout_s * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                     | Gst.MessageType.ELEMENT)
        if msg is None:
            raise RuntimeError("no EOS")
        if msg.type == Gst.MessageType.EOS:
            return out
        if msg.type == Gst.MessageType.ERROR:
            p.set_state(Gst.State.NULL)
            err, debug = msg.parse_error()
            raise RuntimeError(f"{err.message} ({debug})")
        s = msg.get_structure()
        if s.get_name() != "ptm-region-classification":
            continue
        ids, scores = list(s.get_value("class-ids")), list(s.get_value("scores"))
        vec = np.zeros(classes, dtype=np.float64)
        for c, v in zip(ids, scores):
            vec[c] = v
        box = tuple(s.get_value(k) for k in ("region-type", "x", "y", "width", "height"))
        out.append((box, vec, s.get_value("frame")))


def run(model_path, classes, photos, extra):
    """ptminfer over the photos (one frame each, its regions attached):
    per frame, the region messages in order, and the JSON lines."""
    results = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False).name
    p = Gst.parse_launch(
        "appsrc name=src format=time ! ptminfer name=infer inference-region=roi-list output=logits "
        f'top-k={classes} min-region-size={MIN_SIZE} results-file="{results}" model="{model_path}" {extra} '
        "! fakesink sync=false")
    src = p.get_by_name("src")
    p.set_state(Gst.State.PLAYING)
    for i, img in enumerate(photos):
        w, h = img.size
        caps = Gst.Caps.from_string(f"video/x-raw,format=RGB,width={w},height={h},framerate=1/1")
        src.set_property("caps", caps)
        stride = (w * 3 + 3) // 4 * 4
        data = bytearray(stride * h)
        rows = np.asarray(img, dtype=np.uint8).reshape(h, w * 3)
        view = np.frombuffer(data, dtype=np.uint8).reshape(h, stride)
        view[:, :w * 3] = rows
        buf = Gst.Buffer.new_wrapped(bytes(data))
        buf.pts = i * Gst.SECOND
        buf.duration = Gst.SECOND
        for t, x, y, bw, bh in boxes_for(w, h):
            GstVideo.buffer_add_video_region_of_interest_meta(buf, t, x, y, bw, bh)
        if src.emit("push-buffer", buf) != Gst.FlowReturn.OK:
            raise RuntimeError("push-buffer failed")
    src.emit("end-of-stream")
    frames = {}
    for box, vec, frame in region_messages(p, 300, classes):
        frames.setdefault(frame, []).append((box, vec))
    p.set_state(Gst.State.NULL)
    lines = [json.loads(line) for line in open(results)]
    os.unlink(results)
    return frames, lines


def behind_facedetect(model, tf, path, classes):
    """facedetect ! ptminfer roi-list on messi5.jpg: the regions facedetect
    attached, and per region ptminfer's logits and torchvision's on the crop."""
    photo = os.path.join(DATA, "messi5.jpg")
    p = Gst.parse_launch(
        f'filesrc location="{photo}" ! jpegdec ! videoconvert ! video/x-raw,format=RGB ! '
        'facedetect display=false ! '
        f'ptminfer inference-region=roi-list object-class=face output=logits top-k={classes} model="{path}" ! '
        "appsink name=out sync=false")
    sink = p.get_by_name("out")
    p.set_state(Gst.State.PLAYING)
    sample = sink.emit("try-pull-sample", 120 * Gst.SECOND)
    if sample is None:
        p.set_state(Gst.State.NULL)
        raise RuntimeError("facedetect ! ptminfer gave no frame")
    s = sample.get_caps().get_structure(0)
    if hasattr(s, "__enter__"):  # GStreamer 1.26's Python overrides hand it out as a context manager
        with s as st:
            w, h = st.get_value("width"), st.get_value("height")
    else:
        w, h = s.get_value("width"), s.get_value("height")
    buf = sample.get_buffer()
    ok, info = buf.map(Gst.MapFlags.READ)
    img = Image.frombuffer("RGB", (w, h), bytes(info.data), "raw", "RGB", (w * 3 + 3) // 4 * 4, 1).copy()
    buf.unmap(info)
    pairs = []
    for box, vec, _ in region_messages(p, 60, classes):
        _, x, y, bw, bh = box
        with torch.no_grad():
            ref = model(tf(img.crop((x, y, x + bw, y + bh))).unsqueeze(0))[0].double().numpy()
        pairs.append((box, vec, ref))
    p.set_state(Gst.State.NULL)
    return pairs


def main():
    fixtures = sys.argv[1]
    Gst.init(None)
    torch.set_num_threads(os.cpu_count() or 1)
    manifest = json.load(open(os.path.join(fixtures, "manifest.json")))
    nc = {m["architecture"]: m["num_classes"] for m in manifest["models"]}["resnet18"]
    path = os.path.join(fixtures, "resnet18.pth")
    model = torchvision.models.resnet18(weights=None, num_classes=nc)
    model.load_state_dict(torch.load(path))
    model.eval()
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    photos = [Image.open(os.path.join(DATA, f)).convert("RGB") for f in PHOTOS]
    failures = passed = 0

    def check(ok, what):
        nonlocal failures, passed
        print(("ok   " if ok else "FAIL ") + what)
        if ok:
            passed += 1
        else:
            failures += 1

    one, lines = run(path, nc, photos, "batch-size=1")
    batched, _ = run(path, nc, photos, "batch-size=4")
    worst, top5 = 0.0, True
    for i, img in enumerate(photos):
        w, h = img.size
        want = [clip(b, w, h) for b in boxes_for(w, h)]
        want = [b for b in want if b[3] >= MIN_SIZE and b[4] >= MIN_SIZE]
        got = one.get(i, [])
        check([g[0] for g in got] == want, f"{PHOTOS[i]}: regions classified {[g[0] for g in got]}, want {want}")
        for (t, x, y, bw, bh), vec in got:
            with torch.no_grad():
                ref = model(tf(img.crop((x, y, x + bw, y + bh))).unsqueeze(0))[0].double().numpy()
            worst = max(worst, np.abs(vec - ref).max() / max(1.0, np.abs(ref).max()))
            top5 = top5 and list(np.argsort(-vec)[:5]) == list(np.argsort(-ref)[:5])
        line = lines[i] if i < len(lines) else {}
        check([(r["type"], r["x"], r["y"], r["width"], r["height"]) for r in line.get("regions", [])] == want
              and all(len(r["results"]) == nc for r in line.get("regions", [])),
              f"{PHOTOS[i]}: the JSON line lists the {len(want)} regions with their classes")
    check(worst <= 1e-4 and top5, f"every region equals torchvision on its crop: rel. max diff {worst:.2e}, "
          f"top-5 identical: {top5}")
    diff = 0.0
    same = sorted(one) == sorted(batched)
    for f in one:
        if len(one[f]) != len(batched.get(f, [])):
            same = False
            continue
        for (b1, v1), (b2, v2) in zip(one[f], batched[f]):
            same = same and b1 == b2
            diff = max(diff, np.abs(v1 - v2).max() / max(1.0, np.abs(v1).max()))
    check(same and diff <= 1e-5, f"batch-size=4 gives the regions batch-size=1 gives: rel. max diff {diff:.2e}")
    faces, _ = run(path, nc, photos[:1], "object-class=face,car")
    w, h = photos[0].size
    want = [clip(b, w, h) for b in boxes_for(w, h)]
    want = [b for b in want if b[3] >= MIN_SIZE and b[4] >= MIN_SIZE and b[0] in ("face", "car")]
    check([g[0] for g in faces.get(0, [])] == want, f"object-class=face,car: {len(want)} regions")
    pairs = behind_facedetect(model, tf, path, nc)
    worst = max((np.abs(v - r).max() / max(1.0, np.abs(r).max()) for _, v, r in pairs), default=1.0)
    top5 = all(list(np.argsort(-v)[:5]) == list(np.argsort(-r)[:5]) for _, v, r in pairs)
    check(len(pairs) >= 1 and all(b[0] == "face" for b, _, _ in pairs) and worst <= 1e-4 and top5,
          f"facedetect found {[b for b, _, _ in pairs]} in messi5.jpg; each face equals torchvision on its crop: "
          f"rel. max diff {worst:.2e}, top-5 identical: {top5}")
    print(f"{passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
