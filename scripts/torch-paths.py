"""Prints what meson needs to build against this interpreter's torch
(meson.build, -Dtorch_from_python=true): include dirs, library dirs, the
C++ ABI flag, 1 when it is a CUDA build, and the CUDA runtime library the
wheels bring (empty when there is none)."""
import glob
import os

import torch
import torch.utils.cpp_extension as ext

print(";".join(ext.include_paths()))
print(";".join(ext.library_paths()))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(int(torch.version.cuda is not None))
cudart = ""
if torch.version.cuda:
    site = os.path.dirname(os.path.dirname(torch.__file__))
    found = sorted(glob.glob(os.path.join(site, "nvidia", "**", "libcudart.so*"), recursive=True))
    cudart = found[0] if found else ""
print(cudart)
