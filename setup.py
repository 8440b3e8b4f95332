"""tvm_npu: the NPU compiler stack for Apache TVM, its ISA, emulator and runtime module.

The C++ parts (npu_emulator/src, tvm_npu/runtime_module) are compiled here, at install time, into
plain shared libraries loaded through tvm-ffi; nothing is compiled at import time.
"""

import importlib.util
import os
import shlex
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent

PINNED = [
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",  # 0.1.15 segfaults in tvm.ir.save_json (TVM_NOTES.md)
    "numpy>=1.26",
    "onnx==1.23.2",
    "tflite==2.18.0",
    "xgboost-cpu==3.2.0",  # the CPU build: plain xgboost drags in 350 MB of NCCL
    "psutil",
    "cloudpickle",
    "tqdm",
    "rich",
    "tornado",  # TVM's RPC tracker (distributed tuning measurement, scripts/npu_rpc_server.py)
]
DEV = [
    "pytest>=8",
    "hypothesis>=6.100",
    "onnxruntime==1.32.0",  # reference runtime (zoo, conformance, tests)
    "ai-edge-litert==2.3.0",  # TFLite reference interpreter
    "scikit-image==0.26.0",  # real input images for the zoo
    "scipy>=1.11",
    "pillow>=10",
    "onnxslim==0.1.98",  # fixes shape subgraphs of some ONNX exports before import
    "matplotlib>=3.8",  # plots of the benchmark scripts (run_zoo --out)
]
# PyTorch models (.pt2 files of torch.export.save, relay.frontend.from_pytorch): the CPU build.
# No torchvision: the registry's torchvision does not import beside a CPU torch (TVM_NOTES.md).
TORCH = [
    "torch==2.13.0",
]


def _load_isa_generator():
    """Import tvm_npu.isa.gen_cpp without running tvm_npu/__init__.py (which needs TVM)."""
    for name, path in (("tvm_npu", ROOT / "tvm_npu"), ("tvm_npu.isa", ROOT / "tvm_npu" / "isa")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules.setdefault(name, pkg)
    for name, rel in (("tvm_npu.config", "tvm_npu/config.py"), ("tvm_npu.isa.spec", "tvm_npu/isa/spec.py"),
                      ("tvm_npu.isa.gen_cpp", "tvm_npu/isa/gen_cpp.py")):
        spec = importlib.util.spec_from_file_location(name, ROOT / rel)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules["tvm_npu.isa.gen_cpp"]


# (output library relative to the package root, source directories, extra libraries to link).
# One library holds the emulator core, its bindings and the TVM runtime module of kind "npu", so the
# runtime module calls the emulator directly and every global function is registered once.
NATIVE_LIBS = [
    ("npu_emulator/_lib/libnpu_emulator.so", ["npu_emulator/src", "tvm_npu/runtime_module"], []),
]


class BuildNative(build_ext):
    """Generates the ISA header from tvm_npu/isa/spec.py and compiles the C++ libraries."""

    def run(self):
        import tvm_ffi.libinfo

        gen = _load_isa_generator()
        header = ROOT / "npu_emulator" / "src" / "isa_gen.h"
        gen.main([str(header)])
        cxx = os.environ.get("CXX") or (sysconfig.get_config_var("CXX") or "g++").split()[0]
        includes = [f"-I{p}" for p in tvm_ffi.libinfo.include_paths()]
        includes += [f"-I{ROOT / 'npu_emulator' / 'src'}", f"-I{ROOT / 'tvm_npu' / 'runtime_module'}"]
        libdir = str(Path(tvm_ffi.libinfo.find_libtvm_ffi()).parent)
        flags = ["-std=c++17", "-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fvisibility=hidden",
                 "-Wall", "-Wextra", "-Wno-unused-parameter"]
        flags += shlex.split(os.environ.get("NPU_CXXFLAGS", ""))
        editable = getattr(self, "editable_mode", False) or self.inplace
        for rel_out, src_dirs, extra in NATIVE_LIBS:
            sources = sorted(str(p) for d in src_dirs for p in (ROOT / d).glob("*.cc"))
            targets = [ROOT / rel_out] if editable else [Path(self.build_lib) / rel_out]
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                # rpath for a regular install (site-packages/npu_emulator/_lib -> site-packages/tvm_ffi/lib);
                # editable installs rely on tvm_ffi having loaded libtvm_ffi.so before this library.
                cmd = [cxx, *flags, *includes, *sources, "-o", str(target), f"-L{libdir}", "-ltvm_ffi",
                       "-Wl,-rpath,$ORIGIN/../../tvm_ffi/lib", *extra]
                print(" ".join(cmd))
                subprocess.check_call(cmd)


setup(
    name="tvm_npu",
    version="0.1.0",
    description="NPU compiler stack for Apache TVM: ISA, emulator, BYOC partitioning, runtime module",
    python_requires=">=3.10",
    packages=find_packages(include=["tvm_npu", "tvm_npu.*", "npu_emulator", "npu_emulator.*", "model_zoo",
                                    "model_zoo.*"]),
    package_data={"npu_emulator": ["_lib/*.so", "src/*.h", "src/*.cc"]},
    install_requires=PINNED,
    extras_require={"dev": DEV, "torch": TORCH},
    cmdclass={"build_ext": BuildNative},
    # A placeholder extension makes setuptools run build_ext (and mark the wheel platform-specific).
    ext_modules=[Extension("npu_emulator._native_marker", sources=[])],
    # the console script starts without importing TVM; commands import it when they need it
    py_modules=["tvm_npu_launcher"],
    entry_points={"console_scripts": ["tvm-npu=tvm_npu_launcher:main"]},
    zip_safe=False,
)
