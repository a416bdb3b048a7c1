#!/usr/bin/env python3
"""Many streams, one model (share-model): four ptminfer elements of one
pipeline on the same model file, each fed its own moving test pattern,
plus a fifth with another num-threads. Run twice, each in a process of its
own: with share-model (the default) and with share-model=false.

  - shared: one of the four loads the model, the other three take that
    instance ("model-loaded" field shared); the fifth (other options)
    loads its own; the resident set after preroll is smaller than the
    unshared run's by at least two copies of the weights (three are not
    loaded again);
  - every element's per-frame logits (top 5) equal those of its own model
    (within 1e-3 of the larger logit: one pass over several streams'
    images versus one image);
  - the shared instance's forward passes took several streams' frames
    together (stats: shared-images > shared-passes).

    test_shared_model.py FIXTURES_DIR
"""
import json
import os
import subprocess
import sys

from checks import check, failures, proc_status_kb

FRAMES = 24
PATTERNS = ("ball", "zone-plate", "smpte", "circular")


def child(model, share):
    import gi
    gi.require_version("Gst", "1.0")
    from gi.repository import Gst
    Gst.init(None)
    flag = "true" if share else "false"
    branches = [
        f"videotestsrc num-buffers={FRAMES} pattern={p} ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"ptminfer name=i{i} model={model} share-model={flag} num-threads=2 output=logits top-k=5 ! fakesink"
        for i, p in enumerate(PATTERNS)]
    branches.append(
        f"videotestsrc num-buffers={FRAMES} pattern=snow ! video/x-raw,format=RGB,width=320,height=240 ! "
        f"ptminfer name=other model={model} share-model={flag} num-threads=1 ! fakesink")
    p = Gst.parse_launch(" ".join(branches))
    bus = p.get_bus()
    p.set_state(Gst.State.PAUSED)
    p.get_state(120 * Gst.SECOND)
    rss_mb = proc_status_kb("VmRSS") / 1024
    p.set_state(Gst.State.PLAYING)
    results = {f"i{i}": [] for i in range(len(PATTERNS))}
    shared = {}
    errors = []
    while True:
        m = bus.timed_pop_filtered(300 * Gst.SECOND, Gst.MessageType.ELEMENT | Gst.MessageType.EOS |
                                   Gst.MessageType.ERROR)
        if m is None or m.type == Gst.MessageType.EOS:
            break
        if m.type == Gst.MessageType.ERROR:
            errors.append(m.parse_error()[0].message)
            break
        s = m.get_structure()
        name = m.src.get_name()
        if s.get_name() == "model-loaded":
            shared[name] = s.get_value("shared")
        elif s.get_name() == "ptm-classification" and name in results:
            results[name].append([list(s.get_value("class-ids")), list(s.get_value("scores"))])
    stats = p.get_by_name("i0").get_property("stats")
    counts = {k: stats.get_value(k) for k in ("shared-passes", "shared-images") if stats.has_field(k)}
    p.set_state(Gst.State.NULL)
    print(json.dumps({"rss_mb": rss_mb, "results": results, "shared": shared, "counts": counts,
                      "errors": errors}))


def run(fixtures, model, share):
    out = subprocess.run([sys.executable, __file__, fixtures, "--child", model, "1" if share else "0"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise RuntimeError(f"child (share={share}) exited {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    fixtures = sys.argv[1]
    if len(sys.argv) > 2 and sys.argv[2] == "--child":
        child(sys.argv[3], sys.argv[4] == "1")
        return 0
    model = f"{fixtures}/resnet18.pth"
    weights_mb = os.path.getsize(model) / 2**20
    own = run(fixtures, model, False)
    shared = run(fixtures, model, True)
    check(not own["errors"] and not shared["errors"], f"no errors ({own['errors'][:1]} {shared['errors'][:1]})")

    same = [shared["shared"].get(f"i{i}") for i in range(len(PATTERNS))]
    check(sorted(same) == [False, True, True, True],
          f"one of the four elements loaded the model, three took its instance: {same}")
    check(shared["shared"].get("other") is False, "the element with other num-threads loaded its own")
    check(not any(own["shared"].values()), f"share-model=false: every element loaded its own ({own['shared']})")
    saved = own["rss_mb"] - shared["rss_mb"]
    print(f"RSS after preroll: {own['rss_mb']:.0f} MB own models, {shared['rss_mb']:.0f} MB shared "
          f"(weights {weights_mb:.1f} MB a copy)", flush=True)
    check(saved >= 2 * weights_mb, f"sharing saved {saved:.0f} MB, at least two copies of the weights")

    worst = 0.0
    for name, frames in own["results"].items():
        got = shared["results"][name]
        check(len(frames) == FRAMES and len(got) == FRAMES, f"{name}: {len(frames)} and {len(got)} frames")
        for (ids_a, sc_a), (ids_b, sc_b) in zip(frames, got):
            if ids_a != ids_b:
                worst = float("inf")
                continue
            scale = max(1.0, max(abs(v) for v in sc_a))
            worst = max(worst, max(abs(a - b) for a, b in zip(sc_a, sc_b)) / scale)
    check(worst <= 1e-3, f"every frame's top 5 as with a model of its own (largest difference {worst:.2g})")
    # Different patterns give different results: a mix-up between streams shows.
    firsts = {json.dumps(own["results"][f"i{i}"][0][0]) for i in range(len(PATTERNS))}
    check(len(firsts) > 1, "the streams' frames classify differently")

    c = shared["counts"]
    passes, images = c.get("shared-passes", 0), c.get("shared-images", 0)
    print(f"shared instance: {images} images in {passes} forward passes", flush=True)
    check(images == len(PATTERNS) * FRAMES, f"stats: the shared instance ran {images} images")
    check(0 < passes < images, "forward passes took several streams' frames together")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("four streams ran on one instance of the model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
