#!/usr/bin/env python3
"""PyTorch's own figures for bench-forward, batch 1, same weights file, input
size and thread count, on each of this torch version's CPU paths:

  eager     model(x) under no_grad
  frozen    torch.jit.freeze + optimize_for_inference (1.13); where 2.x's
            oneDNN conversion fails, freeze alone (said in the 'frozen' note)
  compiled  torch.compile with Inductor's freezing (2.x)
  aoti      an AOTInductor package (torch._inductor.aoti_compile_and_package,
            2.6+) run by torch._inductor.aoti_load_package; the package is
            written to OUT_DIR so ptm can run the same one

Each path but eager runs in a process of its own, stopped after
PTM_BENCH_PATH_LIMIT_S seconds (default 300) and reported n/a: on Debian
13's torch 2.6, whose BLAS is the reference one, optimize_for_inference of
convnext_tiny had not finished after 7.5 minutes.

Prints one line per model: NAME key=value ... (n/a where a path is missing
on this torch or ran over the limit, with the reason on stderr).

    torch_forward.py THREADS RUNS OUT_DIR NAME:PATH:SIZE:CLASSES ...
    torch_forward.py --serve NAME:PATH:SIZE:CLASSES THREADS PATHS [PT2]

--serve (the field benchmark's paired rounds): the paths named in PATHS
(comma-separated: frozen, compiled, aoti, the last from the package PT2)
made once and kept; each stdin line N answers one JSON line with each
path's median ms over N calls (see timing.serve_blocks).
"""
import multiprocessing
import os
import queue
import sys
import time

import torch
import torchvision

from timing import median_ms, serve_blocks, why


LIMIT_S = float(os.environ.get("PTM_BENCH_PATH_LIMIT_S", "300"))


def unavailable(what, name, reason):
    print(f"torch_forward: {name}: {what} unavailable: {reason}", file=sys.stderr)


def _child(results, threads, fn, args):
    torch.set_num_threads(threads)
    try:
        results.put(("ok", fn(*args)))
    except Exception as e:
        results.put(("error", why(e)))


def limited(what, name, fn, *args):
    """fn(*args) (a module-level function) in a process of its own (spawned:
    a fresh interpreter and OpenMP pool, the same thread count), stopped
    after LIMIT_S seconds; its result, or None where it failed or ran over
    (the reason on stderr): a path this torch lacks or fails on is reported,
    not fatal."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    p = ctx.Process(target=_child, args=(results, torch.get_num_threads(), fn, args), daemon=True)
    p.start()
    deadline = time.monotonic() + LIMIT_S
    status, value = "error", f"did not finish within {LIMIT_S:.0f} s (stopped; PTM_BENCH_PATH_LIMIT_S sets the limit)"
    while time.monotonic() < deadline:
        try:  # a second at a time: a child that crashed is noticed at once
            status, value = results.get(timeout=1)
            break
        except queue.Empty:
            if not p.is_alive() and results.empty():
                status, value = "error", f"its process ended with status {p.exitcode}"
                break
    if p.is_alive():
        p.kill()
    p.join()
    if status != "ok":
        unavailable(what, name, value)
        return None
    return value


def frozen_ms(model, x, runs):
    """Median ms of PyTorch's frozen graph of `model` on `x` (freeze +
    optimize_for_inference, or freeze alone where the conversion fails)
    and which of the two ran."""
    with torch.no_grad():
        f = torch.jit.freeze(torch.jit.trace(model, x))
        try:
            g = torch.jit.optimize_for_inference(f)
            g(x)
            return median_ms(lambda: g(x), runs), "freeze+ofi"
        except Exception:
            return median_ms(lambda: f(x), runs), "freeze"


def compiled_ms(model, x, runs):
    """Median ms of torch.compile (Inductor, freezing) of `model` on `x`."""
    import torch._inductor.config as cfg
    cfg.freezing = True
    with torch.no_grad():
        c = torch.compile(model)
        return median_ms(lambda: c(x), runs)


def aoti_ms(name, model, x, runs, out):
    """Median ms of an AOTInductor package of `model` made for `x`'s shape,
    and the package's path (in `out`)."""
    with torch.no_grad():
        ep = torch.export.export(model, (x,))
        pt2 = os.path.join(out, name + ".pt2")
        torch._inductor.aoti_compile_and_package(ep, package_path=pt2, inductor_configs={
            "aot_inductor.metadata": {"ptm.architecture": name, "ptm.input_size": str(x.shape[-1]),
                                      "ptm.max_batch": "1", "ptm.dynamic_batch": "0"}})
        runner = torch._inductor.aoti_load_package(pt2)
        return median_ms(lambda: runner(x), runs), pt2


def torch_paths(name, model, x, runs, out=None):
    """Median ms of `model` (eval mode) on `x` along each CPU path this torch
    has: eager, frozen (+ its note), compiled (2.x) and, where `out` is a
    folder to write the package to, aoti (2.6+, + the package's path); each
    but eager in a process of its own, within LIMIT_S seconds."""
    v2 = int(torch.__version__.split(".")[0]) >= 2
    r = {}
    with torch.no_grad():
        r["eager"] = median_ms(lambda: model(x), runs)
    fr = limited("frozen", name, frozen_ms, model, x, runs)
    if fr:
        r["frozen"], r["frozen_note"] = fr
    if v2:
        r["compiled"] = limited("torch.compile", name, compiled_ms, model, x, runs)
        if out is not None:
            a = limited("AOTInductor", name, aoti_ms, name, model, x, runs, out)
            if a:
                r["aoti"], r["pt2"] = a
    return r


def serve(spec, threads, paths, pt2=None):
    """--serve: PyTorch's paths of one model loaded once, blocks of calls on
    request. A path that fails to build is left out (the reason on stderr)."""
    torch.set_num_threads(threads)
    name, path, size, classes = spec.split(":")
    model = getattr(torchvision.models, name)(weights=None, num_classes=int(classes))
    model.load_state_dict(torch.load(path))
    model.eval()
    x = torch.randn(1, 3, int(size), int(size))
    calls = {}
    with torch.no_grad():
        for what in paths:
            try:
                if what == "frozen":
                    f = torch.jit.freeze(torch.jit.trace(model, x))
                    try:
                        g = torch.jit.optimize_for_inference(f)
                        g(x)
                        f = g
                    except Exception:
                        pass  # freeze alone, as frozen_ms falls back
                    calls[what] = f
                elif what == "compiled":
                    import torch._inductor.config as cfg
                    cfg.freezing = True
                    calls[what] = torch.compile(model)
                elif what == "aoti" and pt2:
                    calls[what] = torch._inductor.aoti_load_package(pt2)
                else:
                    continue
                calls[what](x)  # built (compiled) now, not in the first block
            except Exception as e:
                calls.pop(what, None)
                unavailable(what, name, why(e))

    def block(n):
        with torch.no_grad():
            return {k: median_ms(lambda: f(x), n, 1) for k, f in calls.items()}
    serve_blocks(block)
    return 0


def main():
    if sys.argv[1] == "--serve":
        return serve(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","), sys.argv[5] if len(sys.argv) > 5 else None)
    threads, runs, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(threads)
    for spec in sys.argv[4:]:
        name, path, size, classes = spec.split(":")
        model = getattr(torchvision.models, name)(weights=None, num_classes=int(classes))
        model.load_state_dict(torch.load(path))
        model.eval()
        x = torch.randn(1, 3, int(size), int(size))
        r = torch_paths(name, model, x, runs, out)
        line = [name]
        for k in ("eager", "frozen", "compiled", "aoti"):
            line.append(f"{k}=" + ("%.2f" % r[k] if r.get(k) is not None else "n/a"))
        line.append("frozen_note=" + r.get("frozen_note", "n/a"))
        line.append("pt2=" + r.get("pt2", "n/a"))
        print(" ".join(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
