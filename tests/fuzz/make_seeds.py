#!/usr/bin/env python3
"""Small seed files for the reader fuzzer: one state dict in the zip,
wrapped-zip, legacy and safetensors formats, saved without CRCs, inert
objects beside it, whole pickled models, and what the running torch has of
the 2.x layouts (big-endian files, v3 tensor records of float8 and unsigned
dtypes).
    make_seeds.py OUT_DIR"""
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import make_fixtures  # noqa: E402
import make_format_fixtures as formats  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
path = lambda name: os.path.join(out, name)
torch.manual_seed(0)
sd = collections.OrderedDict([("conv.weight", torch.randn(4, 3, 3, 3)), ("bn.num_batches_tracked", torch.tensor(3)),
                              ("fc.bias", torch.randn(5).half())])
torch.save(sd, path("zip.pth"))
torch.save({"state_dict": sd, "epoch": 1, "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}, path("wrapped.pth"))
torch.save(sd, path("legacy.pth"), _use_new_zipfile_serialization=False)
make_fixtures.save_safetensors(sd, path("seed.safetensors"))
formats.save_crc_off(sd, path("crc_off.pth"), path("zip.pth"))
v3 = collections.OrderedDict(sd)
for name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, name):
        v3[name] = torch.arange(6).to(torch.uint8).view(getattr(torch, name))
for name in ("uint16", "uint32", "uint64"):
    if hasattr(torch, name):
        v3[name] = torch.arange(6).to(getattr(torch, name))
if len(v3) > len(sd):
    torch.save(v3, path("v3.pth"))
# Inert objects beside the weights (placeholders, numpy scalars, a
# Namespace) and whole pickled models (a module tree, DataParallel-wrapped).
import argparse  # noqa: E402
import numpy as np  # noqa: E402
torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1, model="m"), "acc": np.float64(0.5),
            "epoch": np.int64(3), "mean": np.array([0.5, 0.25], dtype=np.float32)}, path("inert.pth"))
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 5))
torch.save(net, path("whole_model.pth"))
torch.save(torch.nn.DataParallel(net), path("whole_dataparallel.pth"))
formats.save_big_endian(v3, path("big_endian.pth"))  # no file before torch 2.1 (no byteorder record)
open(path("stamp"), "w").write(torch.__version__ + "\n")
