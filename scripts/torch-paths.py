"""Prints what meson needs to build against this interpreter's torch
(meson.build, -Dtorch_from_python=true): include dirs, library dirs, the
C++ ABI flag, and 1 when it is a CUDA build."""
import torch
import torch.utils.cpp_extension as ext

print(";".join(ext.include_paths()))
print(";".join(ext.library_paths()))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(int(torch.version.cuda is not None))
