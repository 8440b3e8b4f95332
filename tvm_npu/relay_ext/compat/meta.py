"""The interface metadata relay.build compiles into an executable (inputs, outputs, mod_name), and reading it back."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import tvm
from tvm import relax

from .params import copy_module

# Both names are part of every library relay.build has exported: never change them.
META_FUNC = "_tvm_npu_relay_compat_meta"  # the Relax function compiled into relay.build executables
META_FORMAT = "tvm_npu.relay_compat/1"


def tensor_info(ty) -> List[Dict[str, Any]]:
    """[{"shape": [int|None] or None, "dtype": str}] for every tensor leaf of a Relax type."""
    if isinstance(ty, relax.TupleType):
        return [leaf for f in ty.fields for leaf in tensor_info(f)]
    if isinstance(ty, relax.TensorType):
        shape = None
        if ty.shape is not None and hasattr(ty.shape, "values"):
            shape = []
            for v in ty.shape.values:
                try:
                    shape.append(int(v))
                except (TypeError, ValueError):
                    shape.append(None)
        return [{"shape": shape, "dtype": str(ty.dtype)}]
    return [{"shape": None, "dtype": None}]


def make_meta(mod: tvm.IRModule, mod_name: str, target: tvm.target.Target) -> Dict[str, Any]:
    fn = mod["main"]
    inputs = []
    for v in fn.params:
        info = tensor_info(v.ty)[0]
        inputs.append({"name": v.name, **info})
    outputs = tensor_info(fn.ret_ty)
    return {"format": META_FORMAT, "mod_name": mod_name, "target": str(target), "inputs": inputs,
            "outputs": outputs}


def with_meta(mod: tvm.IRModule, meta: Dict[str, Any]) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    with bb.function(META_FUNC, []):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(meta, sort_keys=True)))
    out = copy_module(mod)
    out[META_FUNC] = bb.get()[META_FUNC]
    return out


def read_meta(vm) -> Optional[Dict[str, Any]]:
    """The metadata of a relax.VirtualMachine's executable; None when relay.build did not make it."""
    try:
        fn = vm[META_FUNC]
    except Exception:  # noqa: BLE001 - not built by relay.build: no metadata
        return None
    try:
        meta = json.loads(str(fn()))
    except Exception:  # noqa: BLE001 - a foreign function of that name: ignore it
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == META_FORMAT else None
