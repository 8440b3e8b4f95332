"""`relax.ext.npu`: the BYOC code generator RunCodegen calls for functions with Codegen="npu".

Each function is compiled to an Artifact (codegen/graph.py); all artifacts of a module go into one
runtime module of kind "npu" (C++, tvm_npu/runtime_module) that the executable links and exports.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm_ffi.structural import structural_hash

from ..config import get_config
from ..target import config_of, is_npu_target

CODEGEN_OPTIONS_KEY = "config"
_COMPILED: dict = {}  # symbol -> OpRecords of the last compilation (for reports and profiling)
_SOURCES: dict = {}  # symbol -> per composite, the user's bindings it covers (set by the partitioner)
_BUILT: dict = {}  # (symbol, structural hash) -> (artifact bytes, records) compiled by the partitioner


def _key(symbol: str, fn) -> tuple:
    return symbol, structural_hash(fn)


def compile_cached(fn, symbol: str, config, sources=None):
    """compile_function, remembered so RunCodegen reuses what the should-run decision compiled."""
    from ..codegen.graph import compile_function

    key = _key(symbol, fn) + (config,)
    if key not in _BUILT:
        artifact, records = compile_function(fn, symbol, config, sources=sources)
        _BUILT.clear() if len(_BUILT) > 256 else None
        _BUILT[key] = (artifact.serialize(), records)
    return _BUILT[key]


def set_sources(sources: dict) -> None:
    _SOURCES.clear()
    _SOURCES.update(sources)


def _config(options):
    if options is not None and CODEGEN_OPTIONS_KEY in options:
        return get_config(str(options[CODEGEN_OPTIONS_KEY]))
    target = tvm.target.Target.current(allow_none=True)
    return config_of(target) if is_npu_target(target) else get_config()


def npu_codegen(funcs, options, constant_names):
    from ..runtime_module import create_module

    config = _config(options)
    blobs = {}
    for fn in funcs:
        symbol = str(fn.attrs["global_symbol"])
        blobs[symbol], _COMPILED[symbol] = compile_cached(fn, symbol, config, _SOURCES.get(symbol))
    return [create_module(blobs)] if blobs else []


def compiled_records(symbol: str):
    return _COMPILED.get(symbol, [])


def register() -> None:
    tvm_ffi.register_global_func("relax.ext.npu", npu_codegen, override=True)
