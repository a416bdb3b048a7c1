#!/usr/bin/env python3
"""PyTorch's own figures for bench-forward: eager and freeze +
optimize_for_inference, batch 1, on the same weights file and input size.
Prints one line per model: NAME eager_ms frozen_ms."""
import sys
import time

import torch
import torchvision


def median_ms(fn, runs):
    fn()
    fn()
    t = []
    for _ in range(runs):
        a = time.perf_counter()
        fn()
        t.append((time.perf_counter() - a) * 1000)
    t.sort()
    return t[len(t) // 2]


def main():
    threads, runs = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    for spec in sys.argv[3:]:
        name, path, size, classes = spec.split(":")
        model = getattr(torchvision.models, name)(weights=None, num_classes=int(classes))
        model.load_state_dict(torch.load(path))
        model.eval()
        x = torch.randn(1, 3, int(size), int(size))
        with torch.no_grad():
            eager = median_ms(lambda: model(x), runs)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))
            opt = median_ms(lambda: frozen(x), runs)
        print(name, "%.2f" % eager, "%.2f" % opt, flush=True)


if __name__ == "__main__":
    main()
