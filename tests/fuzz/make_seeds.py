#!/usr/bin/env python3
"""Small seed files for the reader fuzzer: one state dict in the zip,
wrapped-zip, legacy and safetensors formats.
    make_seeds.py OUT_DIR"""
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import make_fixtures  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
sd = collections.OrderedDict([("conv.weight", torch.randn(4, 3, 3, 3)), ("bn.num_batches_tracked", torch.tensor(3)),
                              ("fc.bias", torch.randn(5).half())])
torch.save(sd, os.path.join(out, "zip.pth"))
torch.save({"state_dict": sd, "epoch": 1, "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}, os.path.join(out, "wrapped.pth"))
torch.save(sd, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
make_fixtures.save_safetensors(sd, os.path.join(out, "seed.safetensors"))
open(os.path.join(out, "stamp"), "w").write("ok\n")
