#!/usr/bin/env python3
"""GPU benchmark, side by side in one run on the same frames in GPU memory:

  - ptm: frames already in CUDA memory (GstCudaMemory) -> ptminfer
    device=cuda (fused preprocessing kernel, LibTorch, CUDA graphs) ->
    fakesink (bench-gpu, C++);
  - PyTorch-Python on the same GPU: the same frames as a CUDA tensor,
    torchvision's transform done with torch ops on the GPU (antialiased
    bilinear resize, crop, normalise), the same weights, channels_last, in
    eager mode and replayed as a CUDA graph (the better one is compared).

Images per second per model, precision and batch size, with the ratio
ptm / PyTorch; the time per frame at batch 1; and how many 30 fps streams of
that frame size the best figure classifies (decoding not included).

Frame size matters: every source pixel is read to resize a frame, so large
frames are bound by GPU memory bandwidth (a 1920x1080 RGBA frame is 8.3 MB:
an H100's ~3 TB/s caps that at a few hundred frames per second for any
implementation), small ones by the model. Run both:

    bench_gpu.py BENCH_GPU_BINARY FIXTURES_DIR --width 256 --height 256
    bench_gpu.py BENCH_GPU_BINARY FIXTURES_DIR --width 1920 --height 1080 \
        --precisions fp16 --batches 1,32
"""
import argparse
import json
import os
import subprocess
import sys
import time

MODELS = ["resnet50", "resnet18"]
PRECISIONS = ["fp16", "fp32"]
BATCHES = [1, 8, 32, 64]  # the command line may change these


def ptm_figures(binary, fixtures, w, h, count, raw):
    cmd = [binary, "--frames-out", raw, "--width", str(w), "--height", str(h), "--count", str(count)]
    cmd += [f"{fixtures}/{m}.pth:{m}" for m in MODELS] + ["--"] + PRECISIONS + ["--"] + [str(b) for b in BATCHES]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return rows[0], {(r["model"], r["precision"], r["batch"]): r for r in rows[1:]}


def torch_figures(fixtures, info):
    import numpy as np
    import torch
    import torch.nn.functional as F
    import torchvision

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # as ptm does on CUDA
    w, h, k = info["width"], info["height"], info["count"]
    frames = torch.from_numpy(np.fromfile(info["frames"], dtype=np.uint8).reshape(k, h, w, 4)).to(dev)
    short = 256
    nh, nw = (short, int(short * w / h)) if w >= h else (int(short * h / w), short)
    top, left = round((nh - 224) / 2), round((nw - 224) / 2)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    results = {}
    for name in MODELS:
        state = torch.load(f"{fixtures}/{name}.pth", map_location="cpu")
        for prec in PRECISIONS:
            dtype = dtypes[prec]
            # fp32 as ptm runs it: no TF32.
            torch.backends.cudnn.allow_tf32 = prec != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = prec != "fp32"
            model = getattr(torchvision.models, name)(weights=None)
            model.load_state_dict(state)
            model = model.eval().to(dev, dtype).to(memory_format=torch.channels_last)

            def step(x_u8):
                x = x_u8[..., :3].permute(0, 3, 1, 2).float()
                x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
                x = x[:, :, top:top + 224, left:left + 224]
                x = ((x / 255 - mean) / std).to(dtype).contiguous(memory_format=torch.channels_last)
                return model(x)

            for b in BATCHES:
                iters = 600 if b == 1 else max(2000, 150 * b) // b
                static = torch.empty(b, h, w, 4, dtype=torch.uint8, device=dev)
                index = [torch.arange(i * b, (i + 1) * b, device=dev) % k for i in range(16)]
                best = {}
                with torch.inference_mode():
                    for _ in range(5):
                        static.copy_(frames[index[0]])
                        step(static)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for i in range(iters):
                        static.copy_(frames[index[i % 16]])
                        step(static).float().topk(5, 1)[0].cpu()
                    torch.cuda.synchronize()
                    best["eager"] = b * iters / (time.perf_counter() - t0)
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        for _ in range(3):
                            step(static)
                    torch.cuda.current_stream().wait_stream(side)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        out = step(static)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for i in range(iters):
                        static.copy_(frames[index[i % 16]])
                        graph.replay()
                        out.float().topk(5, 1)[0].cpu()
                    torch.cuda.synchronize()
                    best["graphs"] = b * iters / (time.perf_counter() - t0)
                results[(name, prec, b)] = best
            del model
            torch.cuda.empty_cache()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("fixtures")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--frames", default="/tmp/ptm-bench-frames.rgba")
    ap.add_argument("--json", help="also write every figure here")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    args = ap.parse_args()
    MODELS[:] = args.models.split(",")
    PRECISIONS[:] = args.precisions.split(",")
    BATCHES[:] = [int(b) for b in args.batches.split(",")]

    info, ptm = ptm_figures(args.binary, args.fixtures, args.width, args.height, args.count, args.frames)
    import torch
    ref = torch_figures(args.fixtures, info)
    print(f"\nGPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
          f"{info['count']} distinct {info['width']}x{info['height']} RGBA frames in GPU memory\n")
    print(f"{'model':10} {'prec':5} {'batch':>5} | {'ptm img/s':>10} | {'PyTorch eager':>13} {'graphs':>9} | {'ptm/best':>8}")
    rows = []
    for (name, prec, b), r in ptm.items():
        t = ref[(name, prec, b)]
        best = max(t.values())
        ratio = r["images_per_s"] / best if best else 0
        rows.append({"model": name, "precision": prec, "batch": b, "ptm": r["images_per_s"],
                     "torch_eager": t["eager"], "torch_graphs": t["graphs"], "ratio": ratio, "error": r["error"]})
        err = f"  ERROR: {r['error']}" if r["error"] else ""
        print(f"{name:10} {prec:5} {b:5d} | {r['images_per_s']:10.1f} | {t['eager']:13.1f} {t['graphs']:9.1f} | "
              f"{ratio:8.2f}{err}")
    print()
    for name in MODELS:
        r = ptm.get((name, "fp16", 1))
        if r and r["images_per_s"]:
            print(f"{name} fp16 batch 1: {r['ms_per_frame']:.2f} ms per frame in the pipeline")
        best = max((v["images_per_s"], k) for k, v in ptm.items() if k[0] == name)
        print(f"{name}: best {best[0]:.0f} img/s ({best[1][1]}, batch {best[1][2]}) = "
              f"{best[0] / 30:.0f} streams of {info['width']}x{info['height']} at 30 fps, decoding not included")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows, "gpu": torch.cuda.get_device_name(0)}, f, indent=1)
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
