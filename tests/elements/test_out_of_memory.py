#!/usr/bin/env python3
"""Out of memory: an allocation that fails while ptminfer loads a model or
runs it gives an element error naming what failed, never an abort, and the
process goes on (the same pipeline runs once memory is back).

Each case runs in a child process that first plays a small pipeline (so
that LibTorch, its threads and GStreamer's are in place), then limits its
own address space to what it uses plus EXTRA MB (setrlimit(RLIMIT_AS), what
`prlimit --as` sets) and plays the pipeline under test:

  - load: ptminfer loading alexnet (122 MB of weights), so that the
    limit is hit at a different place each time: mapping the file,
    reading tensors, building the model, the optimised graph;
  - load-large-input: resnet18 at input-size=1536 (activations of a few
    hundred MB), failing in the optimised graph's trace or the check that
    the model runs at that size;
  - forward: the same in batches of 3, but the limit is set once the model
    is loaded (the pipeline paused, an appsrc holding the frames back): the
    frames then fail in preprocessing or the forward pass, on the streaming
    thread. Batches of 3 because batch 1's activations may all be held from
    the load on (the oneDNN executor plans them when it is checked there):
    a batch size not run before makes the forward pass allocate.

The limits are swept from a little to a lot: each run must end in an EOS
with every frame classified or in an error message from ptminfer that says
memory ran out; at least one run of each case must fail (the limit was
really hit) and the one without a limit must pass (so the test can fail
both ways).

    test_out_of_memory.py FIXTURES_DIR
"""
import json
import os
import resource
import signal
import subprocess
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

from checks import check, failures, proc_status_kb  # noqa: E402

EXTRA_MB = [64, 192, 384, 640, 1024, 0]  # 0: no limit
CASES = {
    "load": "ptminfer name=infer model={fx}/alexnet.pth top-k=1",
    "load-large-input": "ptminfer name=infer model={fx}/resnet18.pth input-size=1536 top-k=1",
    "forward": "ptminfer name=infer model={fx}/resnet18.pth input-size=1536 batch-size=3 top-k=1",
}
CAPS = "video/x-raw,format=RGB,width=320,height=240,framerate=30/1"
SOURCE = "videotestsrc num-buffers=3 ! " + CAPS + " ! "
HELD_BACK = "appsrc name=src format=time caps=" + CAPS + " ! "


def vm_size():
    return proc_status_kb("VmSize") * 1024


def play(desc, paused=None):
    """Plays to EOS: ("eos", frames classified) or ("error", source, message).
    `paused(pipeline)`, when given, runs once the pipeline is paused (its
    elements started, ptminfer's model loaded) and feeds its appsrc."""
    p = Gst.parse_launch(desc)
    frames = 0
    try:
        bus = p.get_bus()
        if paused:
            p.set_state(Gst.State.PAUSED)  # the model loads here; the sink waits for a frame
            m = bus.pop_filtered(Gst.MessageType.ERROR)
            if m is not None:
                return ("paused-failed", m.src.get_name(), m.parse_error()[0].message)
            paused(p)
        p.set_state(Gst.State.PLAYING)
        while True:
            m = bus.timed_pop_filtered(120 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
                                       | Gst.MessageType.ELEMENT)
            if m is None:
                return ("timeout",)
            if m.type == Gst.MessageType.EOS:
                return ("eos", frames)
            if m.type == Gst.MessageType.ERROR:
                err, dbg = m.parse_error()
                return ("error", m.src.get_name(), err.message, dbg or "")
            if m.get_structure().get_name() == "ptm-classification":
                frames += 1
    finally:
        p.set_state(Gst.State.NULL)


def child(fx, case, extra_mb):
    Gst.init(None)
    warm = SOURCE + f"ptminfer model={fx}/resnet18.pth input-size=64 top-k=1 ! fakesink"
    r = play(warm)
    if r != ("eos", 3):
        print("RESULT " + json.dumps(["warm-up failed", repr(r)]), flush=True)
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)

    def limit():
        if extra_mb:
            resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (extra_mb << 20), hard))

    def feed(p):
        limit()
        src = p.get_by_name("src")
        for i in range(3):
            buf = Gst.Buffer.new_wrapped(bytes([96]) * (320 * 240 * 3))
            buf.pts, buf.duration = i * Gst.SECOND // 30, Gst.SECOND // 30
            src.emit("push-buffer", buf)
        src.emit("end-of-stream")

    if case == "forward":
        r = play(HELD_BACK + CASES[case].format(fx=fx) + " ! fakesink", paused=feed)
    else:
        limit()
        r = play(SOURCE + CASES[case].format(fx=fx) + " ! fakesink")
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    print("RESULT " + json.dumps(r), flush=True)
    # Memory is back: the process is still usable.
    again = play(warm)
    print("AGAIN " + json.dumps(again), flush=True)
    return 0


def main():
    if len(sys.argv) == 5 and sys.argv[2] == "--child":
        return child(sys.argv[1], sys.argv[3], int(sys.argv[4]))
    fx = sys.argv[1]
    for case in CASES:
        outcomes = []
        for extra in EXTRA_MB:
            what = "%s, address space %s" % (case, "+%d MB" % extra if extra else "unlimited")
            p = subprocess.run([sys.executable, os.path.abspath(__file__), fx, "--child", case, str(extra)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
            lines = p.stdout.splitlines()
            result = [json.loads(ln[len("RESULT "):]) for ln in lines if ln.startswith("RESULT ")]
            again = [json.loads(ln[len("AGAIN "):]) for ln in lines if ln.startswith("AGAIN ")]
            if p.returncode != 0 or not result:
                sig = -p.returncode if p.returncode < 0 else 0
                check(False, "%s: the process %s" % (what, "died of %s" % signal.Signals(sig).name if sig else
                                                      "exited with %d" % p.returncode))
                print("\n".join("    " + ln for ln in lines[-25:]), flush=True)
                outcomes.append("crash")
                continue
            r = result[0]
            if r[0] == "eos":
                check(r[1] == 3, "%s: EOS with every frame classified (%s of 3)" % (what, r[1]))
                outcomes.append("eos")
            elif r[0] == "error":
                msg = r[2]
                # One line a user can read, not LibTorch's traceback.
                check(r[1] == "infer" and "memory" in msg.lower() and "\n" not in msg.strip(),
                      "%s: error from ptminfer saying memory ran out, in one line (from %s: %s)" % (what, r[1], msg))
                outcomes.append("error")
            else:
                check(False, "%s: neither EOS nor an error: %r" % (what, r))
                outcomes.append("other")
            check(again and again[0] == ["eos", 3], "%s: the process runs the warm-up again afterwards (%r)"
                  % (what, again[0] if again else None))
        print("%s: %s" % (case, ", ".join("+%d MB %s" % (e, o) if e else "unlimited %s" % o
                                          for e, o in zip(EXTRA_MB, outcomes))), flush=True)
        check("error" in outcomes, "%s: some limit made the run fail (the limit was hit)" % case)
        check(outcomes[-1] == "eos", "%s: without a limit the run passes" % case)
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
