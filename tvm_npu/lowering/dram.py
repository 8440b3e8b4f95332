"""Memory planning of one NPU function in DRAM: inputs and outputs in the IO region (with the IO
table the runtime reads), intermediates in SCRATCH, each value placed once before any lowering.
Constants go to the CONST pool as the operators that read them are lowered."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Set

from ..artifact import IOTensor
from ..ir.desc import FunctionDesc, Unsupported
from ..ir.memory import dtype_name
from ..isa import DType, Region
from .memory import DramTensor

_NPU_DTYPE = {"float32": DType.FP16, "float16": DType.FP16, "int8": DType.INT8, "int16": DType.INT16,
              "int32": DType.INT32}
FP32_READERS = {"softmax", "binary"}  # operator kinds that read a float32 operand without rounding it


@dataclasses.dataclass
class MemoryPlan:
    """Where every value of the function lives: `values` (value key -> DramTensor), the IO table,
    and the size of SCRATCH."""

    values: Dict[Any, DramTensor]
    io: List[IOTensor]
    scratch_bytes: int
    aliases: Set[Any] = dataclasses.field(default_factory=set)  # results that are their input's bytes seen
    #                                     with another shape (a reshape of a dense tensor): no instructions


def fp32_inputs(fd: FunctionDesc) -> Set[Any]:
    """Function inputs every NPU consumer of which can read float32 (softmax, elementwise binaries):
    they stay float32 in the IO region instead of being rounded to fp16 on the way in, so e.g. a
    softmax over [10000, 10003] subtracts its row maximum before anything is rounded."""
    uses: Dict[Any, Set[str]] = {}
    for op in fd.ops:
        for a in op.operands:
            if a is not None:
                uses.setdefault(a, set()).add(op.desc.kind)
    return {key for key, *_ in fd.params if uses.get(key) and uses[key] <= FP32_READERS}


def plan_memory(fd: FunctionDesc) -> MemoryPlan:
    """Places inputs, then outputs, in IO (16-byte aligned, in order), intermediates in SCRATCH."""
    values: Dict[Any, DramTensor] = {}
    io: List[IOTensor] = []
    io_top = 0

    def io_tensor(name: str, kind: str, shape, type_name: str, keep_fp32: bool = False) -> DramTensor:
        nonlocal io_top
        dtype = DType.FP32 if keep_fp32 and type_name == "float32" else _NPU_DTYPE.get(type_name)
        if dtype is None:
            raise Unsupported(f"{kind} {name} of dtype {type_name}")
        t = DramTensor(Region.IO, io_top, tuple(shape), dtype)
        io.append(IOTensor(name, kind, dtype_name(dtype), tuple(shape), io_top, "logical"))
        io_top = (io_top + t.nbytes + 15) // 16 * 16
        return t

    keep = fp32_inputs(fd)
    for key, name, shape, dtype in fd.params:
        values[key] = io_tensor(name, "input", shape, dtype, key in keep)
    result_of = {op.result: op for op in fd.ops}
    outputs: Dict[Any, DramTensor] = {}
    for i, o in enumerate(fd.outputs):
        if o not in values and o not in outputs:
            op = result_of.get(o)
            if op is None:
                raise Unsupported("an output of the NPU function is not computed by it")
            outputs[o] = io_tensor(f"output{i}", "output", op.shape, op.dtype)
    # a reshape that is an output, of a result computed here: that result is written straight into the
    # output's bytes (seen with its own shape), and the reshape moves nothing
    into_output: Dict[Any, DramTensor] = {}
    for op in fd.ops:
        src = op.operands[0] if op.operands else None
        if (is_reshape(op.desc) and op.result in outputs and src in result_of and src not in outputs
                and src not in into_output and _NPU_DTYPE.get(result_of[src].dtype) == outputs[op.result].dtype):
            out = outputs[op.result]
            into_output[src] = DramTensor(out.region, out.offset, tuple(result_of[src].shape), out.dtype)
    scratch_top = 0
    aliases: Set[Any] = set()
    for op in fd.ops:
        if op.result in into_output:
            values[op.result] = into_output[op.result]
            continue
        if op.result in outputs:
            values[op.result] = outputs[op.result]
            src = op.operands[0] if op.operands else None
            if src in into_output and is_reshape(op.desc):
                aliases.add(op.result)
            continue
        src = values.get(op.operands[0]) if op.operands else None
        if is_reshape(op.desc) and src is not None and src.dtype == _NPU_DTYPE.get(op.dtype):
            values[op.result] = DramTensor(src.region, src.offset, tuple(op.shape), src.dtype)  # the same bytes
            aliases.add(op.result)
            continue
        dtype = _NPU_DTYPE.get(op.dtype)
        if dtype is None:
            raise Unsupported(f"intermediate {op.name} of dtype {op.dtype}")
        values[op.result] = DramTensor(Region.SCRATCH, scratch_top, tuple(op.shape), dtype)
        scratch_top = (scratch_top + values[op.result].nbytes + 15) // 16 * 16
    return MemoryPlan(values, io, scratch_top, aliases)


def is_reshape(desc) -> bool:
    """A layout operator that keeps the order of the bytes (reshape, squeeze, expand_dims)."""
    return desc.kind == "layout" and desc.attrs.get("op") == "reshape"
