#!/usr/bin/env python3
"""The field benchmark: ptm next to the engines a user would pick instead,
side by side in one run, on the same decoded frames (vtest.avi scaled to
1280x720 RGB), the same weights, batch 1, the same thread count:

  ptm       the whole pipeline, frames per second in steady state (after
            warm-up frames; the median over every run of 8 consecutive
            frames leaving ptminfer, as the forward-only figures are
            medians of runs, and the rate over all frames in the row's
            note), each in a process of its own, two ways:
            appsrc ! ptminfer ! fakesink (preprocessing in ptminfer's
            thread) and appsrc ! ptmpreprocess ! queue ! ptminfer ! fakesink
            (preprocessing on its own thread); its forward pass alone
            (ptminfer's per-frame inference-ns); on CPUs with bfloat16
            instructions precision=bf16, and precision=int8 calibrated on
            a folder of 32 photographs (opencv-doc's), each with its top-1
            agreement with fp32 on the same frames; and batch-size=2
            (frames batched in time in pairs: one frame of latency for
            throughput), next to PyTorch's frozen graph at batch 2;
  PyTorch   forward only along each CPU path this torch has (eager; frozen:
            jit.freeze + optimize_for_inference; 2.x: torch.compile with
            Inductor's freezing; 2.6+: an AOTInductor package of the same
            weights, which ptm's pipeline then runs too), and its best;
  ONNX Runtime, OpenVINO
            forward only on an ONNX export of the same weights, fp32, on
            their recommended CPU settings (tests/bench/anchors_forward.py,
            run in the venv of scripts/pypi-anchors), OpenVINO's default
            precision (bf16 on CPUs with AMX / AVX-512 BF16) for reference,
            and int8: ONNX Runtime's static quantization (QDQ, per-channel
            weights) calibrated on the same photographs, run by ONNX Runtime
            and by OpenVINO, with their top-1 agreement with fp32;
  ModelPipe Collabora's PyTorch GStreamer elements (PyPI's modelpipe, in
            the same venv, on the system's torch): appsrc ! mp_classifier
            model-name=NAME ! appsink end to end on the same frames
            (tests/bench/modelpipe_e2e.py), torchvision's architecture with
            the fixture's weights, its head made 1000-class (mp_classifier
            takes torchvision's default weights only);
  Python    the canonical torchvision loop end to end (PIL Resize/CenterCrop/
            ToTensor/Normalize + eager forward under no_grad).

Paired rounds: after the table's own figures, ptm's pipeline, the two
engines' fp32 forward passes, PyTorch's paths (those within 1.5x of its
best figure above) and ptm's int8 pipeline are measured again in turns, in processes that stay
loaded (--pairs rounds, 10 by default, of 64 frames / forward passes each),
each round's ratios from figures taken within seconds of each other; their
medians are printed beside the single figures' ratios (on a shared machine
the minute moves every side by tens of per cent).

Prints a table a model with each path's ms a frame, fps and how many times
ptm's pipeline is as fast (pipeline fps / that path's fps), the issue's
criteria underneath, and writes all figures to a CSV (tests/bench/
plot_field.py draws it).

    bench_field.py FIXTURES_DIR [--models resnet18,...] [--frames 120]
                   [--threads 2] [--runs 30] [--csv OUT.csv]
                   [--anchors PYTHON | --no-anchors] [--out DIR] [--pairs 10]
"""
import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

# torch is imported by main() only: each ptm pipeline runs in a process of
# its own (--ptm), as an application would, with no PyTorch work in it.
HERE = os.path.dirname(os.path.abspath(__file__))

VIDEO = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
W, H = 1280, 720
WARM = 12  # frames each pipeline classifies before the clock starts (whole batches of 1-4, 6)


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


def buffers(frames, warm=WARM):
    """The warm-up buffers and the timed ones (30 fps time stamps). Every
    buffer is made (memory allocated and filled) before the clock starts,
    as a camera's buffer pool has them: the kernel zeroing fresh pages
    while the model runs would slow it."""
    def buffer(i, f):
        b = Gst.Buffer.new_wrapped(f)
        b.pts = i * Gst.SECOND // 30
        b.duration = Gst.SECOND // 30
        return b
    return ([buffer(i, frames[i % len(frames)]) for i in range(warm)],
            [buffer(warm + i, f) for i, f in enumerate(frames)])


def run_pipeline(frames, model, threads, middle, props=""):
    """Steady-state fps of appsrc ! MIDDLE ! ptminfer PROPS ! fakesink, the
    forward pass times ptminfer reported (ns) and each frame's top class.
    The timed frames' results go to a results file, read after EOS: no
    message per frame wakes this process's Python thread while the clock
    runs (it would take CPU time from the model on a small machine)."""
    import tempfile
    results = tempfile.NamedTemporaryFile(prefix="ptm-field-", suffix=".jsonl", delete=False).name
    p = Gst.parse_launch(f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},"
                         f"framerate=30/1 ! {middle} ptminfer name=infer model=\"{model}\" num-threads={threads} "
                         f"results-file={results} {props} ! fakesink name=sink sync=false")
    src = p.get_by_name("src")
    bus = p.get_bus()
    # When each frame leaves ptminfer: a probe that only appends a time.
    stamps = []
    p.get_by_name("sink").get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER, lambda pad, info: stamps.append(time.perf_counter()) or Gst.PadProbeReturn.OK)
    p.set_state(Gst.State.PLAYING)

    warm, timed = buffers(frames)

    top = []

    def wait(count):
        """Waits for `count` classifications (or EOS); their inference-ns."""
        got = []
        while count is None or len(got) < count:
            m = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR |
                                       Gst.MessageType.ELEMENT)
            if m is None:
                raise RuntimeError("no message from the pipeline in 120 s")
            if m.type == Gst.MessageType.EOS:
                break
            if m.type == Gst.MessageType.ERROR:
                raise RuntimeError(m.parse_error()[0].message)
            if m.get_structure().get_name() == "ptm-classification":
                got.append(m.get_structure().get_value("inference-ns"))
                top.append(m.get_structure().get_value("class-ids")[0])
        return got

    # Warm-up: the model loaded, its graph optimised, buffers allocated.
    for b in warm:
        src.emit("push-buffer", b)
    wait(WARM)
    p.get_by_name("infer").set_property("post-messages", False)
    t0 = time.perf_counter()
    for b in timed:
        src.emit("push-buffer", b)
    src.emit("end-of-stream")
    wait(None)
    elapsed = time.perf_counter() - t0
    int8 = p.get_by_name("infer").get_property("stats").get_string("int8")
    p.set_state(Gst.State.NULL)
    with open(results) as f:
        docs = [json.loads(line) for line in f][WARM:]
    os.unlink(results)
    if len(docs) != len(frames):
        raise RuntimeError(f"{len(docs)} of {len(frames)} frames classified")
    return (steady_fps(stamps[WARM:]), len(frames) / elapsed, [d["inference_ms"] * 1e6 for d in docs],
            [d["results"][0]["class"] for d in docs], int8)


WINDOW = 8  # frames (whole batches of 1, 2, 4, 8)


def steady_fps(t):
    """Frames a second in steady state from the times frames left the
    pipeline: the median over every run of WINDOW consecutive frames, the
    statistic of the forward-only figures (medians of runs). The rate over
    all frames counts in pauses of the whole machine too (seen on the
    shared VMs: the hypervisor stopping a vCPU for ~100 ms every second or
    two once both are busy), which a 30-run median of a forward pass
    rarely meets; both figures are reported."""
    if len(t) <= WINDOW:
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0.0
    w = sorted((t[i + WINDOW] - t[i]) / WINDOW for i in range(len(t) - WINDOW))
    return 1 / w[len(w) // 2]


def ptm_child(a):
    """--ptm MODEL MIDDLE PROPS: one pipeline in this process; prints its figures."""
    Gst.init(None)
    frames = decode(a.frames)
    fps, fps_all, ns, top, int8 = run_pipeline(frames, a.ptm[0], a.threads, a.ptm[1], a.ptm[2])
    print(json.dumps({"fps": fps, "fps_all": fps_all, "infer_ns": ns, "top": top, "int8": int8}))
    return 0


def ptm_pipeline(a, path, middle, props="", env=None):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), a.fixtures, "--frames", str(a.frames),
                        "--threads", str(a.threads), "--ptm", path, middle, props],
                       stdout=subprocess.PIPE, text=True, timeout=1800, env=dict(os.environ, **(env or {})))
    if r.returncode != 0:
        raise RuntimeError(f"the ptm pipeline ({middle or 'appsrc ! ptminfer'} {props}) exited {r.returncode}")
    j = json.loads(r.stdout.strip().splitlines()[-1])
    over_all = f"median of {WINDOW}-frame runs; {1000 / j['fps_all']:.2f} ms over all frames"
    return j["fps"], j["infer_ns"], j["top"], j.get("int8"), over_all


def python_loop(frames, model, budget_s=60.0):
    """Frames a second of the Python loop; where it takes seconds a frame
    (a transformer on the reference BLAS) over the frames of `budget_s`
    seconds (at least 3, after as much warm-up as a quarter of that)."""
    import torch
    import torchvision.transforms as T
    from PIL import Image
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        t0 = time.perf_counter()
        for f in frames[:WARM]:
            model(tf(Image.frombytes("RGB", (W, H), f)).unsqueeze(0))
            if time.perf_counter() - t0 > budget_s / 4:
                break
        t0 = time.perf_counter()
        n = 0
        for f in frames:
            model(tf(Image.frombytes("RGB", (W, H), f)).unsqueeze(0))
            n += 1
            if n >= 3 and time.perf_counter() - t0 > budget_s:
                break
        return n / (time.perf_counter() - t0)


def calibration_set(frames, out):
    """The int8 calibration images, for every engine the same: a folder of
    the first 32 opencv-doc photographs (ptminfer's calibration=), the same
    preprocessed by torchvision's eval transform (calibration.npy, for ONNX
    Runtime), and the timed frames preprocessed so (frames.npy: the anchors'
    top-1 agreement)."""
    import numpy as np
    import torchvision.transforms as T
    from PIL import Image
    data = os.path.dirname(VIDEO)
    folder = os.path.join(out, "calibration")
    os.makedirs(folder, exist_ok=True)
    photos = sorted(f for f in os.listdir(data) if f.endswith(".jpg"))[:32]
    for f in photos:
        if not os.path.lexists(os.path.join(folder, f)):
            os.symlink(os.path.join(data, f), os.path.join(folder, f))
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    np.save(os.path.join(out, "calibration.npy"),
            np.stack([tf(Image.open(os.path.join(folder, f)).convert("RGB")).numpy() for f in photos]))
    np.save(os.path.join(out, "frames.npy"),
            np.stack([tf(Image.frombytes("RGB", (W, H), f)).numpy() for f in frames]))
    return folder, os.path.join(out, "calibration.npy"), os.path.join(out, "frames.npy")


def anchors(python, name, weights, classes, threads, runs, out, int8_sets=()):
    """ONNX Runtime's and OpenVINO's figures on an ONNX export of the
    weights, exported by the anchors' Python (torch 2.x's exporter needs
    the onnx module, which that venv has)."""
    path = os.path.join(out, name + ".onnx")
    export = ("import sys, torch, torchvision\n"
              "name, weights, classes, path = sys.argv[1:5]\n"
              "m = getattr(torchvision.models, name)(weights=None, num_classes=int(classes))\n"
              "m.load_state_dict(torch.load(weights))\n"
              "m.eval()\n"
              "def export(opset):\n"
              "    torch.onnx.export(m, torch.randn(1, 3, 224, 224), path, opset_version=opset,\n"
              "                      input_names=['input'], output_names=['logits'])\n"
              "try:\n"
              "    with torch.no_grad():\n"
              "        export(13)\n"
              "except Exception as e:\n"
              "    # Transformers: under no_grad nn.MultiheadAttention takes its fused\n"
              "    # path (_native_multi_head_attention), which has no ONNX form; with\n"
              "    # gradients on it runs its plain ops (the same sums), exported at 17.\n"
              "    print(f'ONNX export at opset 13 failed ({type(e).__name__}); again with the unfused attention, opset 17',\n"
              "          file=sys.stderr)\n"
              "    export(17)\n")
    e = subprocess.run([python, "-c", export, name, weights, str(classes), path], timeout=1800)
    if e.returncode != 0:
        return {"error": f"the ONNX export exited {e.returncode}"}
    r = subprocess.run([python, os.path.join(HERE, "anchors_forward.py"),
                        path, "224", str(threads), str(runs), *int8_sets], stdout=subprocess.PIPE, text=True,
                       timeout=1800)
    if r.returncode != 0:
        return {"error": f"anchors_forward.py exited {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def paired_rounds(a, path, others, rounds, block=64):
    """ptm's pipeline (appsrc ! ptminfer) and the other paths in turns, each
    side a process that stays loaded: each round ptm's pipeline classifies
    `block` frames, then each of `others` (a command serving blocks of
    forward passes: anchors_forward.py --serve for ONNX Runtime's and
    OpenVINO's fp32, torch_forward.py --serve for PyTorch's paths) runs
    `block` calls of each of its paths, the other processes idle meanwhile
    (after one round not counted). On a shared machine the load from other
    tenants moves every figure by tens of per cent from one minute to the
    next; a round's figures are taken within seconds of each other, so its
    ratios compare ptm with the others under the same conditions. Returns
    [(pipeline ms, [each other's {path: ms}])]."""
    me = [sys.executable, os.path.abspath(__file__), a.fixtures, "--frames", str(a.frames),
          "--threads", str(a.threads), "--ptm-serve", path]
    procs = []
    try:
        def ask(proc, line):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            reply = proc.stdout.readline()
            if not reply:
                raise RuntimeError(f"{os.path.basename(proc.args[1])} --serve ended")
            return json.loads(reply)

        # One at a time, each loaded before the next starts: ptminfer times
        # its candidate graphs at load, and a load beside torch.compile's
        # compilation (both cores busy, in bursts) times that instead. (One
        # run whose processes started together had every ptm round at 26-32
        # ms against 17.6 in the table: the speed of LibTorch's graph, not
        # the executor's.)
        for cmd in [me] + others:
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1))
            ask(procs[-1], "ready")
        # A round not counted: each side's first block after the other
        # process loaded (its threads asleep, the caches the other's) ran
        # slow, by as much as a third.
        for proc in procs:
            ask(proc, str(block))
        out = []
        for _ in range(rounds):
            pm = ask(procs[0], str(block))["ms"]
            out.append((pm, [ask(proc, str(block)) for proc in procs[1:]]))
        return out
    except (RuntimeError, OSError, ValueError) as e:
        print(f"paired rounds: {e}", file=sys.stderr)
        return []
    finally:
        for proc in procs:
            try:
                proc.stdin.write("quit\n")
                proc.stdin.close()
                proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()


def ptm_serve(a):
    """--ptm-serve MODEL [--ptm-serve-props PROPS]: appsrc ! ptminfer PROPS ! fakesink, loaded and warm,
    classifying blocks of frames on request: each stdin line N pushes N
    frames and prints the block's steady-state ms a frame; "ready" answers
    once warm; "quit" ends."""
    import tempfile
    Gst.init(None)
    frames = decode(a.frames)
    # A results file as the table's pipeline writes one (the JSON line a
    # frame is part of the pipeline's work).
    results = tempfile.NamedTemporaryFile(prefix="ptm-field-", suffix=".jsonl", delete=False).name
    p = Gst.parse_launch(f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},"
                         f"framerate=30/1 ! ptminfer name=infer model=\"{a.ptm_serve}\" num-threads={a.threads} "
                         f"results-file={results} {a.ptm_serve_props} ! fakesink name=sink sync=false")
    src = p.get_by_name("src")
    stamps = []
    done = threading.Event()
    target = [0]

    def left(pad, info):
        stamps.append(time.perf_counter())
        if len(stamps) >= target[0]:
            done.set()
        return Gst.PadProbeReturn.OK
    p.get_by_name("sink").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, left)
    p.set_state(Gst.State.PLAYING)
    pushed = [0]

    def block(n):
        """Pushes n frames (every buffer made first) and waits for them."""
        bufs = []
        for i in range(n):
            b = Gst.Buffer.new_wrapped(frames[(pushed[0] + i) % len(frames)])
            b.pts = (pushed[0] + i) * Gst.SECOND // 30
            b.duration = Gst.SECOND // 30
            bufs.append(b)
        pushed[0] += n
        first = len(stamps)
        target[0] = first + n
        done.clear()
        for b in bufs:
            src.emit("push-buffer", b)
        if not done.wait(120):
            raise RuntimeError("frames did not come out of the pipeline in 120 s")
        return stamps[first:first + n]

    from timing import serve_blocks
    try:
        block(WARM)
        # Which graph this process runs, as the load chose it (on stderr:
        # rounds that come out slow can be told apart from a slow machine).
        while True:
            m = p.get_bus().pop_filtered(Gst.MessageType.ELEMENT)
            if m is None:
                break
            st = m.get_structure()
            if st.get_name() == "model-loaded":
                chosen = [n for n in (st.get_value("report") or "").splitlines() if "executor" in n]
                print(f"ptm --ptm-serve: {chosen[0] if chosen else 'no oneDNN executor note in the load report'}",
                      file=sys.stderr, flush=True)
        serve_blocks(lambda n: {"ms": 1000 / steady_fps(block(n))})
        src.emit("end-of-stream")
        p.get_bus().timed_pop_filtered(60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    finally:
        p.set_state(Gst.State.NULL)
        os.unlink(results)
    return 0


def modelpipe(python, name, model, threads, count, out, eager_ms=None):
    """ModelPipe's mp_classifier end to end on the same frames: its ms a
    frame and version, or the error. Where PyTorch's eager forward takes
    `eager_ms` of seconds (a transformer on the reference BLAS), on as many
    frames as a minute holds (at least 3), after a quarter of that warming up."""
    warm = WARM
    if eager_ms:
        count = min(count, max(3, int(60000 / eager_ms)))
        warm = min(WARM, max(1, int(15000 / eager_ms)))
    import torch
    weights = os.path.join(out, f"modelpipe_{name}.pth")
    state = model.state_dict()
    # The fixture's weights with a 1000-class head (seeded): mp_classifier
    # builds torchvision's model for its default (ImageNet) weights.
    g = torch.Generator().manual_seed(0)
    for k, v in list(state.items()):
        if k.rsplit(".", 1)[0] == HEADS[name] and v.shape[0] != 1000:
            state[k] = torch.randn((1000,) + tuple(v.shape[1:]), generator=g) * 0.01 if v.dim() > 1 else torch.zeros(1000)
    torch.save(state, weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    r = subprocess.run([python, os.path.join(HERE, "modelpipe_e2e.py"), name, weights, str(count), str(threads),
                        os.path.join(out, "torch-home"), str(warm)], stdout=subprocess.PIPE, text=True, timeout=1800)
    try:
        result = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        result = {}
    if r.returncode != 0:
        return {"error": result.get("error", f"modelpipe_e2e.py exited {r.returncode}"),
                "version": result.get("version", "")}
    return result


# Each architecture's classification layer (torchvision's keys).
HEADS = {"resnet18": "fc", "resnet50": "fc", "mobilenet_v2": "classifier.1", "efficientnet_b0": "classifier.1",
         "convnext_tiny": "classifier.2", "vit_b_16": "heads.head"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures")
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,efficientnet_b0,convnext_tiny,vit_b_16")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--csv", default=None)
    ap.add_argument("--anchors", default=None, help="the Python of scripts/pypi-anchors")
    ap.add_argument("--no-anchors", action="store_true")
    ap.add_argument("--out", default=None, help="where ONNX exports go (default: beside the CSV)")
    ap.add_argument("--pairs", type=int, default=10,
                    help="rounds of ptm's pipeline, the engines' fp32 forward and PyTorch's paths measured in turns "
                         "(0: none)")
    ap.add_argument("--ptm-serve", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ptm-serve-props", default="", help=argparse.SUPPRESS)
    ap.add_argument("--ptm", nargs=3, metavar=("MODEL", "MIDDLE", "PROPS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ptm:
        return ptm_child(a)
    if a.ptm_serve:
        return ptm_serve(a)
    import torch
    import torchvision
    sys.path.insert(0, HERE)
    from torch_forward import frozen_ms, limited, torch_paths
    Gst.init(None)
    torch.set_num_threads(a.threads)
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.csv or a.fixtures + "/x")), "field-out")
    os.makedirs(out, exist_ok=True)
    anchor_python = None
    if not a.no_anchors:
        anchor_python = a.anchors or subprocess.run(
            ["bash", os.path.join(HERE, "../../scripts/pypi-anchors")],
            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    manifest = json.load(open(os.path.join(a.fixtures, "manifest.json")))
    classes = {m["architecture"]: m["num_classes"] for m in manifest["models"]}
    frames = decode(a.frames)
    calibration, calibration_npy, frames_npy = calibration_set(frames, out)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{len(frames)} frames {W}x{H} RGB from {os.path.basename(VIDEO)}, batch 1, {a.threads} threads, "
          f"torch {torch.__version__}, GStreamer {Gst.version_string()}, {cpu}, {os.cpu_count()} CPUs", flush=True)
    rows = []
    verdicts = []
    flags = open("/proc/cpuinfo").read()
    bf16 = " avx512_bf16" in flags or " amx_bf16" in flags
    # AOTInductor packages: made and run where this torch can (2.6+).
    aoti = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 6)
    for name in a.models.split(","):
        path = os.path.join(a.fixtures, name + ".pth")
        if name in classes:
            model = getattr(torchvision.models, name)(weights=None, num_classes=classes[name])
            model.load_state_dict(torch.load(path))
        else:
            # Not among the shared fixtures (convnext_tiny): torchvision's
            # own initialisation, seeded, 1000 classes, written beside the CSV.
            torch.manual_seed(0)
            model = getattr(torchvision.models, name)(weights=None)
            classes[name] = 1000
            path = os.path.join(out, name + ".pth")
            torch.save(model.state_dict(), path + ".tmp")
            os.replace(path + ".tmp", path)
        model.eval()
        r = []  # (path, kind, ms a frame or None, note)

        x = torch.randn(1, 3, 224, 224)
        # PyTorch first: on 2.6+ it also writes the AOTInductor package of
        # these weights that ptm runs too.
        tp = torch_paths(name, model, x, a.runs, out if aoti else None)
        fps1, ns1, top1, _, all1 = ptm_pipeline(a, path, "")
        fps2, _, _, _, all2 = ptm_pipeline(a, path, "ptmpreprocess ! queue max-size-buffers=2 !")
        r.append(("ptm pipeline: appsrc ! ptminfer", "pipeline", 1000 / fps1, all1))
        r.append(("ptm pipeline: ptmpreprocess ! queue ! ptminfer", "pipeline", 1000 / fps2, all2))
        ns4 = None
        if tp.get("pt2"):
            # A package whose products call LibTorch's BLAS (Debian 13's
            # reference one) may take seconds a frame: a row that says so.
            try:
                fps4, ns4, _, _, all4 = ptm_pipeline(a, tp["pt2"], "")
                r.append(("ptm pipeline: appsrc ! ptminfer, AOTInductor .pt2", "pipeline", 1000 / fps4,
                          "the same weights through torch._inductor.aoti_compile_and_package; " + all4))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                r.append(("ptm pipeline: appsrc ! ptminfer, AOTInductor .pt2", "pipeline", None,
                          f"did not finish: {e}"))
        if bf16:
            # bfloat16 itself: a load times it against float32 and keeps
            # the faster, which here would measure float32 again where
            # that won.
            fps3, _, top3, _, all3 = ptm_pipeline(a, path, "", "precision=bf16", {"PTM_BF16_ALWAYS": "1"})
            agree = sum(x == y for x, y in zip(top1, top3))
            r.append(("ptm pipeline: ptminfer precision=bf16", "pipeline-reduced", 1000 / fps3,
                      f"{fps3 / fps1:.2f}x fp32's; bfloat16 forced (PTM_BF16_ALWAYS=1: a load keeps float32 where "
                      f"it runs faster); top-1 as fp32 on {agree}/{len(top1)} frames; " + all3))
            verdicts.append(f"{name}: bf16 pipeline ÷ fp32 pipeline = {fps3 / fps1:.2f} (criterion >= 2 for "
                            f"resnet18, resnet50), top-1 agreement {agree}/{len(top1)}")
        # Preprocessing on the streaming thread alone, as before it was
        # split across the model's threads (2026-12-07).
        fps7, _, _, _, all7 = ptm_pipeline(a, path, "", "", {"PTM_PREPROCESS_THREADS": "1"})
        r.append(("ptm pipeline: appsrc ! ptminfer, preprocessing on 1 thread", "pipeline-variant", 1000 / fps7,
                  f"PTM_PREPROCESS_THREADS=1; {fps7 / fps1:.2f}x the fp32 pipeline's rate; " + all7))
        fps6, _, top6, _, all6 = ptm_pipeline(a, path, "", "batch-size=2")
        agree = sum(x == y for x, y in zip(top1, top6))
        r.append(("ptm pipeline: ptminfer batch-size=2", "pipeline-batched", 1000 / fps6,
                  f"frames in pairs; top-1 as batch 1 on {agree}/{len(top1)} frames; " + all6))
        fps5, _, top5, status, all5 = ptm_pipeline(a, path, "", f"precision=int8 calibration={calibration}")
        agree = sum(x == y for x, y in zip(top1, top5))
        r.append(("ptm pipeline: ptminfer precision=int8", "pipeline-reduced", 1000 / fps5,
                  f"{fps5 / fps1:.2f}x fp32's; top-1 as fp32 on {agree}/{len(top1)} frames; {status}; {all5}"))
        verdicts.append(f"{name}: int8 pipeline ÷ fp32 pipeline = {fps5 / fps1:.2f} (criterion >= 2 for resnet18, "
                        f"resnet50), top-1 agreement {agree}/{len(top1)} ({status})")
        ns = sorted(ns1)
        r.append(("ptm forward only (ptminfer's own timing)", "forward", ns[len(ns) // 2] / 1e6, "median"))
        if ns4:
            ns = sorted(ns4)
            r.append(("ptm forward only, .pt2 (ptminfer's own timing)", "forward", ns[len(ns) // 2] / 1e6, "median"))
        r.append(("PyTorch eager", "forward", tp.get("eager"), ""))
        r.append(("PyTorch frozen", "forward", tp.get("frozen"),
                  tp.get("frozen_note", "failed or ran over the limit (the reason on stderr)")))
        frozen2 = limited("frozen at batch 2", name, frozen_ms, model, torch.cat([x, x]), a.runs)
        frozen2 = (frozen2[0] / 2, frozen2[1]) if frozen2 else None
        r.append(("PyTorch frozen, batch 2 (a frame)", "forward-batched", frozen2[0] if frozen2 else None,
                  frozen2[1] if frozen2 else "failed or ran over the limit (the reason on stderr)"))
        if int(torch.__version__.split(".")[0]) >= 2:
            r.append(("PyTorch torch.compile (freezing)", "forward", tp.get("compiled"), ""))
        if aoti:
            r.append(("PyTorch AOTInductor package (aoti_load_package)", "forward", tp.get("aoti"), ""))
        best = min((v for k, v in tp.items() if k in ("eager", "frozen", "compiled", "aoti") and v), default=None)
        if anchor_python:
            an = anchors(anchor_python, name, path, classes[name], a.threads, a.runs, out,
                         (calibration_npy, frames_npy))
            o, v = an.get("onnxruntime", {}), an.get("openvino", {})
            r.append((f"ONNX Runtime {o.get('version', '')} fp32", "forward", o.get("fp32"), o.get("error", "")))
            r.append((f"OpenVINO {v.get('version', '')} fp32", "forward", v.get("fp32"), v.get("error", "")))
            r.append((f"OpenVINO {v.get('version', '')} default precision", "forward-reduced", v.get("default"),
                      str(v.get("default_precision", v.get("error", "")))))
            r.append((f"ONNX Runtime {o.get('version', '')} int8 (static, QDQ)", "forward-reduced", o.get("int8"),
                      f"top-1 as its fp32 on {o['int8_agree']} frames" if "int8_agree" in o
                      else an.get("int8_error", o.get("error", ""))))
            r.append((f"OpenVINO {v.get('version', '')} int8 (the same QDQ model)", "forward-reduced", v.get("int8"),
                      f"top-1 as its fp32 on {v['int8_agree']} frames" if "int8_agree" in v
                      else an.get("int8_error", v.get("error", ""))))
        if anchor_python and name in HEADS:
            mp = modelpipe(anchor_python, name, model, a.threads, a.frames, out, tp.get("eager"))
            r.append((f"ModelPipe {mp.get('version', '')} mp_classifier", "end-to-end",
                      1000 / mp["fps"] if "fps" in mp else None,
                      mp.get("error", "end to end, 1000-class head")))
        r.append(("Python torchvision loop (PIL + eager)", "end-to-end", 1000 / python_loop(frames, model), ""))
        # Paired rounds: ptm's pipeline in turns with the engines' fp32
        # forward passes and with PyTorch's paths (those within 1.5x of the
        # best in the figures above: a path slower than that is not the
        # best in any round).
        onnx = os.path.join(out, name + ".onnx")
        others, labels = [], []
        if anchor_python and os.path.exists(onnx):
            others.append([anchor_python, os.path.join(HERE, "anchors_forward.py"), "--serve", onnx, "224",
                           str(a.threads)])
            labels.append("engines")
        kept = [k for k in ("frozen", "compiled", "aoti") if best and tp.get(k) and tp[k] <= 1.5 * best
                and (k != "aoti" or tp.get("pt2"))]
        if kept:
            others.append([sys.executable, os.path.join(HERE, "torch_forward.py"), "--serve",
                           f"{name}:{path}:224:{classes[name]}", str(a.threads), ",".join(kept)]
                          + ([tp["pt2"]] if "aoti" in kept else []))
            labels.append("torch")
        # int8 against fp32 (the reduced-precision criterion) in the same
        # rounds: a second ptm process with precision=int8.
        others.append([sys.executable, os.path.abspath(__file__), a.fixtures, "--frames", str(a.frames),
                       "--threads", str(a.threads), "--ptm-serve", path, "--ptm-serve-props",
                       f"precision=int8 calibration={calibration}"])
        labels.append("int8")
        rounds = paired_rounds(a, path, others, a.pairs) if a.pairs > 0 and others else []
        pairs, torch_pairs, int8_pairs = [], [], []  # (pipeline ms, the other's best ms, ratio)
        for k, (pm, got) in enumerate(rounds):
            notes = []
            for label, g in zip(labels, got):
                if label == "engines":
                    em = min((v for v in (g.get("onnxruntime"), g.get("openvino")) if v), default=None)
                    if em:
                        pairs.append((pm, em, em / pm))
                        notes.append(f"the better of ONNX Runtime and OpenVINO fp32 {em:.2f} ms right after it: "
                                     f"{em / pm:.2f}")
                elif label == "int8":
                    int8_pairs.append((pm, g["ms"], pm / g["ms"]))
                    notes.append(f"ptm's int8 pipeline {g['ms']:.2f} ms: {pm / g['ms']:.2f}x as fast")
                elif g:
                    which = min(g, key=g.get)
                    torch_pairs.append((pm, g[which], g[which] / pm))
                    notes.append(f"PyTorch's best ({which} of {', '.join(sorted(g))}) {g[which]:.2f} ms: "
                                 f"{g[which] / pm:.2f}")
            r.append((f"ptm pipeline, paired round {k + 1} of {len(rounds)}", "pipeline-paired", pm, "; ".join(notes)))

        pipeline_ms = min(m for p, k, m, _ in r if k == "pipeline" and m)  # fp32
        print(f"\n{name}: {'ms/frame':>9s} {'fps':>8s}  ptm pipeline ÷ it", flush=True)
        for p, k, m, note in r:
            ratio = m / pipeline_ms if m else None
            print(f"  {p:50s} {m if m else float('nan'):9.2f} {1000 / m if m else float('nan'):8.1f}  "
                  f"{'%.2fx' % ratio if ratio else 'n/a':>6s}  {note}", flush=True)
            rows.append({"torch": torch.__version__, "model": name, "path": p, "kind": k,
                         "ms": "%.3f" % m if m else "", "fps": "%.2f" % (1000 / m) if m else "",
                         "pipeline_ratio": "%.3f" % ratio if ratio else "", "note": note})
        if best:
            verdicts.append(f"{name}: pipeline ÷ PyTorch's best forward = {best / pipeline_ms:.2f} (criterion >= 1.0)")
        batched = [m for p, k, m, _ in r if k == "pipeline-batched" and m]
        if best and batched:
            verdicts.append(f"{name}: batch-size=2 pipeline ÷ PyTorch's best forward (batch 1) = "
                            f"{best / batched[0]:.2f}" + (f"; ÷ PyTorch frozen at batch 2 = {frozen2[0] / batched[0]:.2f}"
                                                          if frozen2 else ""))
        mp_ms = [m for p, k, m, _ in r if p.startswith("ModelPipe") and m]
        if mp_ms:
            verdicts.append(f"{name}: pipeline ÷ ModelPipe end to end = {mp_ms[0] / pipeline_ms:.2f} (criterion >= 3)")
        fp32 = [m for p, k, m, _ in r if k == "forward" and m and ("ONNX" in p or "OpenVINO" in p)]
        if fp32:
            verdicts.append(f"{name}: pipeline ÷ the better of ONNX Runtime and OpenVINO fp32 = "
                            f"{min(fp32) / pipeline_ms:.2f} (criterion >= 0.8, goal 1.0)")
        if torch_pairs:
            verdicts.append(f"{name}: the same in {len(torch_pairs)} paired rounds (ptm, then PyTorch's paths, in "
                            f"turns) = {statistics.median(q for _, _, q in torch_pairs):.2f} median, rounds " +
                            ", ".join(f"{q:.2f}" for _, _, q in torch_pairs))
        if int8_pairs:
            verdicts.append(f"{name}: int8 pipeline ÷ fp32 pipeline in {len(int8_pairs)} paired rounds = "
                            f"{statistics.median(q for _, _, q in int8_pairs):.2f} median, rounds " +
                            ", ".join(f"{q:.2f}" for _, _, q in int8_pairs))
        if pairs:
            verdicts.append(f"{name}: the same in {len(pairs)} paired rounds (ptm, then the engines, in turns) = "
                            f"{statistics.median(q for _, _, q in pairs):.2f} median, rounds " +
                            ", ".join(f"{q:.2f}" for _, _, q in pairs))
    print("\n" + "\n".join(verdicts))
    if a.csv:
        tmp = a.csv + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, a.csv)
        print(f"figures written to {a.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
