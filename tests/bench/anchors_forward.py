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
    gets; bf16 where the CPU has it: a reduced-precision figure);
  - with CALIBRATION.npy (N x 3 x SIZE x SIZE float32, preprocessed
    images): int8 by ONNX Runtime's post-training quantization
    (quant_pre_process, then quantize_static: QDQ format, per-channel
    int8 weights, uint8 activations, MinMax calibration on those images),
    run by ONNX Runtime and by OpenVINO (which executes a QDQ model's
    quantized parts in int8), each with its top-1 agreement with its own
    fp32 on TOP1.npy's images (when given).

    anchors_forward.py MODEL.onnx SIZE THREADS RUNS [CALIBRATION.npy [TOP1.npy]]
    anchors_forward.py --serve MODEL.onnx SIZE THREADS   (fp32 only, blocks of runs on request)
"""
import json
import sys

import numpy as np

from timing import median_ms, serve_blocks, why


def quantized(path, calibration):
    """ONNX Runtime's static int8 quantization of `path` (QDQ); its path."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": c[None]} for c in calibration])

        def get_next(self):
            return next(self.items, None)

    pre, out = path[:-5] + ".pre.onnx", path[:-5] + ".int8.onnx"
    quant_pre_process(path, pre)
    quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def agreement(f32, int8, images):
    """Images whose top-1 class int8 gives as fp32 does: "k/n"."""
    same = sum(int(np.argmax(f32(i[None]))) == int(np.argmax(int8(i[None]))) for i in images)
    return f"{same}/{len(images)}"


def serve(path, size, threads):
    """--serve: both engines' fp32 sessions loaded once; each stdin line N
    runs N forward passes on each and prints their medians (ms), "ready"
    answers once loaded, "quit" ends (the field benchmark's paired rounds)."""
    import onnxruntime as ort
    import openvino as ov
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    so = ort_options(ort, threads)
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    core = ov.Core()
    req = core.compile_model(core.read_model(path), "CPU", ov_config(threads, fp32=True)).create_infer_request()
    engines = {"onnxruntime": lambda: s.run(None, {name: x}), "openvino": lambda: req.infer({0: x})}
    serve_blocks(lambda n: {k: median_ms(f, n, 3) for k, f in engines.items()})


def ort_options(ort, threads):
    """ONNX Runtime's documented low-latency CPU set-up."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def ov_config(threads, fp32):
    """OpenVINO's CPU plugin for latency; fp32: float32 inference forced
    (else its default precision, bf16 on CPUs that have it)."""
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if fp32:
        cfg["INFERENCE_PRECISION_HINT"] = "f32"
    return cfg


def main():
    if sys.argv[1] == "--serve":
        return serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    path, size, threads, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    calibration = np.load(sys.argv[5]) if len(sys.argv) > 5 else None
    check = np.load(sys.argv[6]) if len(sys.argv) > 6 else None
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    out = {}
    int8 = None
    if calibration is not None:
        try:
            int8 = quantized(path, calibration)
        except Exception as e:
            out["int8_error"] = why(e)
    try:
        import onnxruntime as ort
        so = ort_options(ort, threads)
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        out["onnxruntime"] = {"version": ort.__version__, "fp32": median_ms(lambda: s.run(None, {name: x}), runs, 3)}
        if int8:
            q = ort.InferenceSession(int8, so, providers=["CPUExecutionProvider"])
            out["onnxruntime"]["int8"] = median_ms(lambda: q.run(None, {name: x}), runs, 3)
            if check is not None:
                out["onnxruntime"]["int8_agree"] = agreement(lambda a: s.run(None, {name: a})[0],
                                                             lambda a: q.run(None, {name: a})[0], check)
    except Exception as e:  # reported in the table, not fatal
        out["onnxruntime"] = {"error": why(e)}
    try:
        import openvino as ov
        core = ov.Core()
        model = core.read_model(path)
        r = {"version": ov.get_version().split("-")[0]}
        for key, fp32 in (("fp32", True), ("default", False)):
            compiled = core.compile_model(model, "CPU", ov_config(threads, fp32))
            req = compiled.create_infer_request()
            r[key] = median_ms(lambda: req.infer({0: x}), runs, 3)
            if key == "default":
                t = compiled.get_property("INFERENCE_PRECISION_HINT")
                r["default_precision"] = t.to_string() if hasattr(t, "to_string") else str(t)
        if int8:
            compiled = core.compile_model(core.read_model(int8), "CPU", ov_config(threads, False))
            req = compiled.create_infer_request()
            r["int8"] = median_ms(lambda: req.infer({0: x}), runs, 3)
            if check is not None:
                f32 = core.compile_model(model, "CPU", ov_config(threads, True)).create_infer_request()
                r["int8_agree"] = agreement(lambda a: f32.infer({0: a})[0], lambda a: req.infer({0: a})[0], check)
        out["openvino"] = r
    except Exception as e:
        out["openvino"] = {"error": why(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
