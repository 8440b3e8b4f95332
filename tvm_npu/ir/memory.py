"""The NPU's on-chip memories as TensorIR and the tiling stage see them: scopes, defined once, and
the bytes a tile takes in SRAM (rows padded to 16 bytes, docs/ISA.md)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

from ..config import NPUConfig
from ..isa import DType, Space
from ..isa.spec import row_stride

# TensorIR storage scopes of the three SRAMs (custom scopes must look like "global.<tag>")
SCOPES: Dict[Space, str] = {Space.ACT: "global.npu_act", Space.WGT: "global.npu_wgt", Space.ACC: "global.npu_acc"}
SPACE_OF_SCOPE: Dict[str, Space] = {v: k for k, v in SCOPES.items()}
ACT, WGT, ACC = SCOPES[Space.ACT], SCOPES[Space.WGT], SCOPES[Space.ACC]


def space_of(scope: str) -> Space:
    """The SRAM of a TensorIR storage scope."""
    try:
        return SPACE_OF_SCOPE[scope]
    except KeyError:
        raise ValueError(f"{scope!r} is not an NPU memory scope ({sorted(SPACE_OF_SCOPE)})") from None


def sram_bytes(shape: Sequence[int], dtype: DType) -> int:
    """Bytes of an (n, h, w, c) tile in SRAM: every row of c elements padded to 16 bytes."""
    n, h, w, c = shape
    return n * h * w * row_stride(c, dtype)


def over_budget(config: NPUConfig, needs: Dict[Space, int]) -> Optional[str]:
    """The one SRAM budget check of the tiling stage: None when every SRAM holds what the plan needs,
    else which SRAM is short and by how much."""
    over = [f"{s.name} needs {b} of {config.sram_bytes(int(s))} bytes" for s, b in needs.items()
            if b > config.sram_bytes(int(s))]
    return "; ".join(over) or None


_DTYPES = {"float16": DType.FP16, "float32": DType.FP32, "int8": DType.INT8, "int16": DType.INT16,
           "int32": DType.INT32}


def dtype_of(name: str) -> DType:
    """The ISA dtype of a tensor dtype name."""
    try:
        return _DTYPES[str(name)]
    except KeyError:
        raise ValueError(f"dtype {name} has no NPU equivalent ({sorted(_DTYPES)})") from None


def dtype_name(dtype: DType) -> str:
    """The tensor dtype name of an ISA dtype (dtype_of's inverse)."""
    return _NAMES[dtype]


_NAMES = {v: k for k, v in _DTYPES.items()}


def storage_dtype(desc, t) -> DType:
    """How an operand of `desc` is stored in DRAM unless the memory plan says otherwise: integer
    composites keep their integer dtypes; float constants of elementwise binaries are fp32 (computed in
    fp32, see the vector lowering), other float tensors fp16."""
    if desc.integer:
        return dtype_of(t.dtype)
    if t.is_const and desc.kind == "binary":
        return DType.FP32
    return DType.FP16
