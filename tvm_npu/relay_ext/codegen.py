"""`relax.ext.npu`: the BYOC code generator RunCodegen calls for functions with Codegen="npu".

The driver has already compiled every NPU function to an artifact (tvm_npu/driver.py); RunCodegen
hands them over in its options (`{"npu": {"config": ..., "artifacts": {symbol: bytes}}}`), and this
function puts them into one runtime module of kind "npu" (C++, tvm_npu/runtime_module) that the
executable links and exports. It compiles nothing itself and keeps no state between calls.
"""

from __future__ import annotations

import tvm_ffi

from ..runtime_module import create_module

CODEGEN_CONFIG_KEY = "config"
CODEGEN_ARTIFACTS_KEY = "artifacts"


def npu_codegen(funcs, options, constant_names):
    artifacts = options.get(CODEGEN_ARTIFACTS_KEY) if options is not None else None
    if artifacts is None:
        raise ValueError("relax.ext.npu: NPU functions reach code generation only through tvm_npu's driver "
                         "(tvm.compile with an NPU target), which compiles them first")
    blobs = {}
    for fn in funcs:
        symbol = str(fn.attrs["global_symbol"])
        if symbol not in artifacts:
            raise ValueError(f"relax.ext.npu: no compiled artifact for NPU function {symbol}")
        blobs[symbol] = bytes(artifacts[symbol])
    return [create_module(blobs)] if blobs else []


def register() -> None:
    tvm_ffi.register_global_func("relax.ext.npu", npu_codegen, override=True)
