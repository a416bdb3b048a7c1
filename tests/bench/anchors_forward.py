#!/usr/bin/env python3
"""The field benchmark's engines other than PyTorch (run with the venv of
scripts/pypi-anchors): forward-only milliseconds of an ONNX export of the
same weights, batch 1, on each engine's recommended CPU settings with the
given thread count, median of RUNS after warm-up runs. Prints one JSON
object: {"onnxruntime": {...}, "openvino": {...}}, each path's ms or an
"error" string.

  - ONNX Runtime fp32: all graph optimisations, `intra_op_num_threads`,
    sequential execution (its documented low-latency CPU set-up);
  - OpenVINO fp32: the CPU plugin with PERFORMANCE_HINT=LATENCY,
    INFERENCE_NUM_THREADS and INFERENCE_PRECISION_HINT=f32 (on CPUs with
    AMX or AVX-512 BF16 OpenVINO otherwise runs in bf16);
  - OpenVINO default: the same without the precision hint (what a user
    gets; bf16 where the CPU has it: a reduced-precision figure).

    anchors_forward.py MODEL.onnx SIZE THREADS RUNS
"""
import json
import sys

import numpy as np

from timing import median_ms


def main():
    path, size, threads, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    out = {}
    try:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        out["onnxruntime"] = {"version": ort.__version__, "fp32": median_ms(lambda: s.run(None, {name: x}), runs, 3)}
    except Exception as e:  # reported in the table, not fatal
        out["onnxruntime"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    try:
        import openvino as ov
        core = ov.Core()
        model = core.read_model(path)
        r = {"version": ov.get_version().split("-")[0]}
        for key, extra in (("fp32", {"INFERENCE_PRECISION_HINT": "f32"}), ("default", {})):
            cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, **extra}
            compiled = core.compile_model(model, "CPU", cfg)
            req = compiled.create_infer_request()
            r[key] = median_ms(lambda: req.infer({0: x}), runs, 3)
            if key == "default":
                t = compiled.get_property("INFERENCE_PRECISION_HINT")
                r["default_precision"] = t.to_string() if hasattr(t, "to_string") else str(t)
        out["openvino"] = r
    except Exception as e:
        out["openvino"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
