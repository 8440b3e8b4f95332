"""Compiles one partitioned Relax function (Codegen="npu") into an executable Artifact.

The function's body is a chain of calls to composite functions (`npu.*`). Each becomes one
operator: its description is re-derived from the registered pattern (the same `describe` the
checks used), its operands are placed in DRAM (function inputs and outputs in the IO region,
intermediates in SCRATCH, constants in CONST), and `Lowerer` emits its tiled instructions.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from tvm import relax
from tvm.relax.backend.pattern_registry import get_pattern

from .. import __version__
from ..artifact import Artifact, IOTensor, ProvenanceRange
from ..config import NPUConfig
from ..isa import DType, Region
from ..relay_ext.ops import OpDesc, Unsupported, describe
from . import plans as P
from .lower import Lowerer, const_dtype, lower_op
from .memory import ConstPool, DramTensor

def _fp32_inputs(fn: relax.Function) -> set:
    """Function inputs every NPU consumer of which can read float32 (softmax, elementwise binaries):
    they stay float32 in the IO region instead of being rounded to fp16 on the way in, so e.g. a
    softmax over [10000, 10003] subtracts its row maximum before anything is rounded."""
    composites, uses = {}, {}
    for b in _bindings(fn):
        v = b.value
        if isinstance(v, relax.Function) and v.attrs is not None and "Composite" in v.attrs:
            composites[b.var] = v
        elif isinstance(v, relax.Call):
            comp = composites.get(v.op) if isinstance(v.op, relax.Var) else v.op
            kind = composite_desc(comp).kind if isinstance(comp, relax.Function) else ""
            for a in v.args:
                uses.setdefault(a, set()).add(kind)
    return {p for p in fn.params if uses.get(p) and uses[p] <= {"softmax", "binary"}}


_NPU_DTYPE = {"float32": DType.FP16, "float16": DType.FP16, "int8": DType.INT8, "int16": DType.INT16,
              "int32": DType.INT32}
_IO_NAME = {DType.FP16: "float16", DType.FP32: "float32", DType.INT8: "int8", DType.INT16: "int16",
            DType.INT32: "int32"}


@dataclasses.dataclass
class OpRecord:
    """One lowered operator, for reports: where its instructions are and what it was planned as."""

    composite: str
    binding: str
    sources: List[str]
    kind: str
    plan: Optional[P.Plan]
    macs: int
    instr_range: Tuple[int, int]
    predicted_cycles: int
    min_dram_bytes: int = 0  # inputs, weights and outputs each moved once (the roofline's traffic)
    vector_elems: int = 0  # one vector pass over the output
    integer: bool = False  # int8 operands: the MAC array's full rate (fp16 runs at half rate)

    def roofline_cycles(self, config: NPUConfig) -> float:
        from ..perf_model import roofline_cycles

        return roofline_cycles(self.macs, not self.integer, self.min_dram_bytes, self.vector_elems, config)

    def to_dict(self, config: NPUConfig) -> dict:
        return {"op": self.composite, "binding": self.binding, "sources": self.sources, "kind": self.kind,
                "plan": self.plan.to_dict() if self.plan else None, "macs": self.macs,
                "min_dram_bytes": self.min_dram_bytes, "vector_elems": self.vector_elems,
                "predicted_cycles": self.predicted_cycles, "roofline_cycles": round(self.roofline_cycles(config), 1),
                "instructions": list(self.instr_range)}


def composite_desc(fn: relax.Function) -> OpDesc:
    """Re-matches a composite function's body against its registered pattern."""
    name = str(fn.attrs["Composite"])
    fp = get_pattern(name)
    if fp is None:
        raise Unsupported(f"composite {name} is not in the pattern registry")
    var2val = relax.analysis.get_var2val(fn)
    matched = fp.pattern.extract_matched_expr(fn.body.body, var2val)
    if matched is None:
        raise Unsupported(f"composite {name}: its body no longer matches the pattern")
    ann = {k: matched[p] for k, p in fp.annotation_patterns.items() if p in matched}
    return describe(name, ann)


def _bindings(fn: relax.Function):
    for block in fn.body.blocks:
        yield from block.bindings


def macs_of(desc: OpDesc) -> int:
    if desc.kind == "conv2d":
        g = P.conv_geom(desc)
        return g.n * g.oh * g.ow * g.cout * g.kh * g.kw * g.cg
    if desc.kind == "matmul":
        rows, k, n = P.matmul_geom(desc)
        return P.matmul_batches(desc) * rows * k * n
    return 0


class FunctionCompiler:
    def __init__(self, config: NPUConfig, double_buffer: bool = True, plans: Optional[Dict[str, P.Plan]] = None,
                 sources: Optional[List[str]] = None):
        self.sources = sources  # per composite, the user's bindings it covers (from the partitioner)
        self.config = config
        self.double_buffer = double_buffer
        self.plan_overrides = plans or {}

    def compile(self, fn: relax.Function, symbol: str) -> Tuple[Artifact, List[OpRecord]]:
        consts = ConstPool()
        low = Lowerer(self.config, consts, self.double_buffer)
        values: Dict[relax.Var, DramTensor] = {}
        io: List[IOTensor] = []
        io_top = 0

        def io_tensor(name: str, kind: str, ty, keep_fp32: bool = False) -> DramTensor:
            nonlocal io_top
            dtype = DType.FP32 if keep_fp32 and str(ty.dtype) == "float32" else _NPU_DTYPE.get(str(ty.dtype))
            if dtype is None:
                raise Unsupported(f"{kind} {name} of dtype {ty.dtype}")
            shape = tuple(int(v) for v in ty.shape.values)
            t = DramTensor(Region.IO, io_top, shape, dtype)
            io.append(IOTensor(name, kind, _IO_NAME[dtype], shape, io_top, "logical"))
            io_top = (io_top + t.nbytes + 15) // 16 * 16
            return t

        fp32_inputs = _fp32_inputs(fn)
        for p in fn.params:
            values[p] = io_tensor(p.name, "input", p.ty, p in fp32_inputs)
        ret = fn.body.body
        outputs = list(ret.fields) if isinstance(ret, relax.Tuple) else [ret]
        scratch_top = 0
        composites: Dict[relax.Var, relax.Function] = {}
        records: List[OpRecord] = []
        pending_outputs: Dict[relax.Var, DramTensor] = {}
        for o in outputs:
            if not isinstance(o, relax.Var):
                raise Unsupported("function output is not a variable")
        for i, o in enumerate(outputs):
            if o not in values:
                pending_outputs[o] = io_tensor(f"output{i}", "output", o.ty)

        for b in _bindings(fn):
            v = b.value
            if isinstance(v, relax.Function) and v.attrs is not None and "Composite" in v.attrs:
                composites[b.var] = v
                continue
            if not isinstance(v, relax.Call):
                raise Unsupported(f"unexpected binding {b.var.name} in an NPU function")
            comp = composites.get(v.op) if isinstance(v.op, relax.Var) else v.op
            if not isinstance(comp, relax.Function):
                raise Unsupported(f"binding {b.var.name} does not call a composite")
            desc = composite_desc(comp)
            arg_of = dict(zip(comp.params, v.args))
            ins: List[DramTensor] = []
            for expr, t in zip(desc.exprs, desc.inputs):
                if t.is_const:
                    ins.append(consts.tensor(t.const, const_dtype(desc, t)))
                    continue
                outer = arg_of.get(expr)
                if outer is None or outer not in values:
                    raise Unsupported(f"operand of {desc.composite} is not a function input or earlier result")
                ins.append(values[outer])
            if b.var in pending_outputs:
                out = pending_outputs[b.var]
            else:
                dtype = _NPU_DTYPE[str(b.var.ty.dtype)]
                out = DramTensor(Region.SCRATCH, scratch_top, tuple(int(x) for x in b.var.ty.shape.values), dtype)
                scratch_top = (scratch_top + out.nbytes + 15) // 16 * 16
            values[b.var] = out
            start = len(low.program)
            plan = lower_op(low, desc, ins, out, self.plan_overrides.get(b.var.name))
            traffic = sum(t.nbytes for t in ins) + out.nbytes
            records.append(OpRecord(desc.composite, b.var.name, desc.sources, desc.kind, plan, macs_of(desc),
                                    (start, len(low.program)), low.estimates[-1], traffic, out.nbytes // out.itemsize,
                                    desc.quant is not None))
        missing = [o for o in outputs if o not in values]
        if missing:
            raise Unsupported("an output of the NPU function is not computed by it")
        low.program.emit("end")
        if self.sources is not None and len(self.sources) == len(records):
            for r, covered in zip(records, self.sources):
                r.binding = covered or r.binding
        provenance = [ProvenanceRange(r.instr_range[0], r.instr_range[1], r.composite,
                                      f"{' + '.join(r.sources)}: {r.binding}") for r in records
                      if r.instr_range[1] > r.instr_range[0]]
        art = Artifact(self.config, low.program.encode(), bytes(consts.data), io, scratch_top, provenance,
                       {"tvm_npu": __version__, "symbol": symbol, "transposing_dma": low.stats["transposing_dma"],
                        "steps": low.stats["steps"], "layers": [r.to_dict(self.config) for r in records]})
        return art, records


def compile_function(fn: relax.Function, symbol: str, config: NPUConfig, **kwargs) -> Tuple[Artifact, List[OpRecord]]:
    return FunctionCompiler(config, **kwargs).compile(fn, symbol)


__all__ = ["compile_function", "composite_desc", "FunctionCompiler", "OpRecord", "macs_of"]
