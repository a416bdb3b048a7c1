#!/usr/bin/env python3
"""ModelPipe's classification element end to end, for the field benchmark
(tests/bench/bench_field.py): the same decoded frames through

    appsrc ! mp_classifier model-name=NAME device=cpu qos=false ! appsink

in this process, run by the Python of scripts/pypi-anchors (modelpipe from
PyPI, on the system's torch and GStreamer). mp_classifier builds
torchvision's NAME with its default weights, which torchvision takes from
$TORCH_HOME/hub/checkpoints/<the weights' file name> where that file is
there: the benchmark puts WEIGHTS (a 1000-class state dict) there, so no
download happens. Frames are RGB 1280x720 (rows unpadded, as ModelPipe
reads them). Prints one JSON line: {"fps": ..., "version": ...}, or
{"error": ...} (exit status 1).

    modelpipe_e2e.py NAME WEIGHTS FRAMES THREADS TORCH_HOME [WARM_FRAMES]
"""
import importlib.metadata
import importlib.util
import json
import os
import sys
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


class Failed(Exception):
    pass


def main():
    try:
        return run()
    except Failed as e:  # said on the last line, for the benchmark's table
        try:
            version = importlib.metadata.version("modelpipe")
        except importlib.metadata.PackageNotFoundError:
            version = ""
        print(json.dumps({"error": str(e), "version": version}))
        return 1


def run():
    name, weights, count, threads, home = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    warm_frames = int(sys.argv[6]) if len(sys.argv) > 6 else None
    os.environ["TORCH_HOME"] = home
    import torch
    import torchvision
    torch.set_num_threads(threads)
    # Where torchvision looks for NAME's default weights before downloading.
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    target = os.path.join(home, "hub", "checkpoints", os.path.basename(url))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target):
        os.unlink(target)
    os.symlink(os.path.abspath(weights), target)

    Gst.init(None)
    spec = importlib.util.find_spec("modelpipe")
    if spec is None or not spec.submodule_search_locations:
        raise Failed("modelpipe is not installed in this Python (scripts/pypi-anchors installs it)")
    sys.path.insert(0, os.path.join(list(spec.submodule_search_locations)[0], "plugins", "python"))
    import classifier  # modelpipe's element module (gst-python layout)
    if not hasattr(classifier, "__gstelementfactory__"):
        raise Failed("modelpipe's mp_classifier could not be registered (a module it needs is missing)")
    Gst.Element.register(None, *classifier.__gstelementfactory__)

    sys.path.insert(0, HERE)
    from bench_field import H, W, WARM, buffers, decode
    frames = decode(count)
    p = Gst.parse_launch(f"appsrc name=src format=time caps=video/x-raw,format=RGB,width={W},height={H},"
                         f"framerate=30/1 ! mp_classifier model-name={name} device=cpu qos=false ! "
                         f"appsink name=out sync=false")
    src, sink, bus = p.get_by_name("src"), p.get_by_name("out"), p.get_bus()
    p.set_state(Gst.State.PLAYING)

    warm_frames = WARM if warm_frames is None else warm_frames
    warm, timed = buffers(frames, warm_frames)

    def pull(n):
        got = 0
        while n is None or got < n:
            s = sink.emit("try-pull-sample", 120 * Gst.SECOND)
            if s is None:
                m = bus.pop_filtered(Gst.MessageType.ERROR)
                if m:
                    err, debug = m.parse_error()
                    raise Failed(f"{m.src.get_name()}: {err.message} ({(debug or '').splitlines()[-1][:200]})")
                if n is None:
                    break
                raise Failed(f"mp_classifier: {got} of {n} frames came out")
            got += 1
        return got

    for b in warm:  # the model loaded and run once before the clock starts
        src.emit("push-buffer", b)
    pull(warm_frames)
    t0 = time.perf_counter()
    for b in timed:
        src.emit("push-buffer", b)
    src.emit("end-of-stream")
    got = pull(None)
    elapsed = time.perf_counter() - t0
    p.set_state(Gst.State.NULL)
    if got != len(frames):
        raise Failed(f"mp_classifier: {got} of {len(frames)} frames came out")
    print(json.dumps({"fps": len(frames) / elapsed, "version": importlib.metadata.version("modelpipe")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
