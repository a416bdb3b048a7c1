#!/usr/bin/env python3
"""Seed corpora of the fuzz targets (targets.cpp), one folder a target:
    zip/          torch.save files: a state dict, wrapped in a training
                  checkpoint, saved without CRCs, with inert objects beside
                  it, whole pickled models, ptm's labels record, and what the
                  running torch has of the 2.x layouts (big-endian files, v3
                  tensor records of float8 and unsigned dtypes)
    pickle/       the data.pkl of each zip seed behind its storage sizes
                  (targets.cpp's pickle input)
    legacy/       the pre-1.6 format
    safetensors/  with and without __metadata__
    pt2/          AOTInductor packages' layout (metadata, a fake .so)
    labels/       labels files
    config/       hub folders' config.json [NUL preprocessor_config.json]
    detect/       keys and shapes of torchvision's architectures, as they
                  are, under DataParallel's prefix, beside a loss's weights
    make_seeds.py OUT_DIR"""
import argparse
import collections
import io
import json
import os
import struct
import sys
import zipfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
import make_fixtures  # noqa: E402
import make_format_fixtures as formats  # noqa: E402

out = sys.argv[1]
for target in ("zip", "pickle", "legacy", "safetensors", "pt2", "labels", "config", "detect"):
    os.makedirs(os.path.join(out, target), exist_ok=True)


def path(target, name):
    return os.path.join(out, target, name)


torch.manual_seed(0)
sd = collections.OrderedDict([("conv.weight", torch.randn(4, 3, 3, 3)), ("bn.num_batches_tracked", torch.tensor(3)),
                              ("fc.bias", torch.randn(5).half())])

# zip
torch.save(sd, path("zip", "zip.pth"))
torch.save({"state_dict": sd, "epoch": 1, "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}, path("zip", "wrapped.pth"))
formats.save_crc_off(sd, path("zip", "crc_off.pth"), path("zip", "zip.pth"))
v3 = collections.OrderedDict(sd)
for name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, name):
        v3[name] = torch.arange(6).to(torch.uint8).view(getattr(torch, name))
for name in ("uint16", "uint32", "uint64"):
    if hasattr(torch, name):
        v3[name] = torch.arange(6).to(getattr(torch, name))
if len(v3) > len(sd):
    torch.save(v3, path("zip", "v3.pth"))
# Views into one storage, a transposed (non-contiguous) view.
base = torch.randn(24)
torch.save({"a": base[2:10].view(2, 4), "b": base.view(4, 6).t(), "c": base}, path("zip", "views.pth"))
import numpy as np  # noqa: E402
torch.save({"state_dict": sd, "args": argparse.Namespace(lr=0.1, model="m"), "acc": np.float64(0.5),
            "epoch": np.int64(3), "mean": np.array([0.5, 0.25], dtype=np.float32)}, path("zip", "inert.pth"))
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 5))
torch.save(net, path("zip", "whole_model.pth"))
torch.save(torch.nn.DataParallel(net), path("zip", "whole_dataparallel.pth"))
formats.save_big_endian(v3, path("zip", "big_endian.pth"))  # no file before torch 2.1 (no byteorder record)
# ptmtrainsink's labels record beside the weights.
torch.save(sd, path("zip", "labels_record.pth"))
with zipfile.ZipFile(path("zip", "labels_record.pth"), "a", zipfile.ZIP_STORED) as z:
    top = z.namelist()[0].split("/")[0]
    z.writestr(top + "/ptm/labels.txt", "cat\ndog\nbird\n")

# pickle: count, u32 sizes of storages "0".."n-1", data.pkl
for name in sorted(os.listdir(os.path.join(out, "zip"))):
    with zipfile.ZipFile(path("zip", name)) as z:
        names = z.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl")), None)
        if pkl is None:
            continue
        top = pkl[:-len("data.pkl")]
        sizes = {}
        for n in names:
            if n.startswith(top + "data/"):
                sizes[n[len(top + "data/"):]] = z.getinfo(n).file_size
        keys = [str(i) for i in range(len(sizes))]
        if sorted(sizes) != sorted(keys):
            continue
        try:
            data = z.read(pkl)
        except zipfile.BadZipFile:  # saved without CRCs: zipfile refuses it
            continue
        with open(path("pickle", name.replace(".pth", ".bin")), "wb") as f:
            f.write(bytes([len(keys)]) + b"".join(struct.pack("<I", sizes[k]) for k in keys) + data)

# legacy
torch.save(sd, path("legacy", "legacy.pth"), _use_new_zipfile_serialization=False)
torch.save({"state_dict": sd, "epoch": 2}, path("legacy", "wrapped.pth"), _use_new_zipfile_serialization=False)

# safetensors
make_fixtures.save_safetensors(sd, path("safetensors", "seed.safetensors"))
with open(path("safetensors", "metadata.safetensors"), "wb") as f:
    h = json.dumps({"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                    "b": {"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]}}).encode()
    f.write(struct.pack("<Q", len(h)) + h + bytes(range(20)))

# pt2
meta = {"AOTI_DEVICE_KEY": "cpu", "ptm.architecture": "resnet18", "ptm.input_size": "224",
        "ptm.labels": json.dumps(["a", "b"]), "ptm.max_batch": "1"}
for top in ("", "model/"):
    with zipfile.ZipFile(path("pt2", "package%s.pt2" % ("_top" if top else "")), "w", zipfile.ZIP_STORED) as z:
        z.writestr(top + "version", "1")
        z.writestr(top + "archive_format", "pt2")
        z.writestr(top + "data/aotinductor/model/c0ffee.cpp", "// generated model source\n")
        z.writestr(top + "data/aotinductor/model/c0ffee_metadata.json", json.dumps(meta))
        z.writestr(top + "data/aotinductor/model/c0ffee.so", b"\x7fELF not really" + b"\0" * 64)

# labels
open(path("labels", "plain.txt"), "w").write("tench\ngoldfish\ngreat white shark\n")
open(path("labels", "crlf.txt"), "wb").write(b"  cat \r\n\tdog\r\n\r\nbird\r\n\r\n")
open(path("labels", "utf8.txt"), "wb").write("caf\u00e9\n\u732b\n".encode())

# config
timm_cfg = {"architecture": "resnet18", "num_classes": 3, "label_names": ["a", "b", "c"],
            "pretrained_cfg": {"input_size": [3, 96, 96], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
                               "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center"}}
open(path("config", "timm.json"), "w").write(json.dumps(timm_cfg))
hf_cfg = {"architectures": ["ResNetForImageClassification"], "id2label": {"0": "a", "1": "b"},
          "label2id": {"a": 0, "b": 1}}
hf_pre = {"do_resize": True, "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3}
open(path("config", "transformers.json"), "wb").write(json.dumps(hf_cfg).encode() + b"\0" + json.dumps(hf_pre).encode())

# detect: "key d0,d1,..." a tensor
try:
    import torchvision
except ImportError:  # an interpreter with torch alone: the other's seeds serve
    torchvision = None


def shapes(model, prefix=""):
    return "".join("%s%s %s\n" % (prefix, k, ",".join(str(d) for d in v.shape)) for k, v in model.state_dict().items())


for name in ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_0", "googlenet", "regnet_y_400mf",
             "convnext_tiny", "swin_t", "swin_v2_t", "vit_b_32", "maxvit_t", "shufflenet_v2_x0_5", "mnasnet0_5"):
    builder = getattr(torchvision.models, name, None) if torchvision else None
    if builder is None:
        continue
    kw = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    m = builder(num_classes=7, **kw)
    open(path("detect", name + ".txt"), "w").write(shapes(m))
    if name == "resnet18":
        open(path("detect", "resnet18_dataparallel.txt"), "w").write(shapes(m, "module."))
        open(path("detect", "resnet18_lightning.txt"), "w").write(shapes(m, "model.") + "criterion.weight 7\n")
open(os.path.join(out, "stamp"), "w").write(torch.__version__ + "\n")
