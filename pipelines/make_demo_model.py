#!/usr/bin/env python3
"""Writes the demo model of the README's first command: a torchvision
resnet18 (ImageNet class layout) with fixed-seed random weights, saved as a
training checkpoint ({'epoch', 'state_dict' with DataParallel 'module.'
keys}) the way training scripts leave them. No download is involved, so
its predictions are not meaningful; point --model at your own weights.

    /usr/bin/python3 pipelines/make_demo_model.py OUT.pth
"""
import collections
import os
import sys

import torch
import torchvision


def main(out):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    state = collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    tmp = out + ".tmp"
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": state}, tmp)
    os.replace(tmp, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
