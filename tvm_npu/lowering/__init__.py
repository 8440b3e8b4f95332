"""The lowering stage: one lowering per operator family behind one dispatch table, over one shared
emission toolkit (emit.py). Each lowering takes its operands placed in DRAM and the tile plan the
tiling stage made, and emits the operator's double-buffered instructions; it never re-decides."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import tiling
from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.memory import storage_dtype
from ..ir.plan import Refusal, TilePlan
from ..isa import DType, Region
from ..options import CompileOptions
from .emit import Lowerer
from .integer import lower_qbinary, lower_qconcat, lower_qlut, lower_qmean, lower_qpool
from .layout import lower_layout
from .mac import lower_mac
from .memory import ConstPool, DramTensor
from .vector import (
    lower_concat,
    lower_elementwise,
    lower_layer_norm,
    lower_mean,
    lower_pool,
    lower_reduce,
    lower_softmax,
)

Lowering = Callable[[Lowerer, OpDesc, List[DramTensor], DramTensor, TilePlan], None]

LOWERINGS: Dict[str, Lowering] = {
    "conv2d": lower_mac,
    "matmul": lower_mac,
    "binary": lower_elementwise,
    "activation": lower_elementwise,
    "softmax": lower_softmax,
    "mean": lower_mean,
    "reduce": lower_reduce,
    "layer_norm": lower_layer_norm,
    "concat": lower_concat,
    "pool": lower_pool,
    "layout": lower_layout,
    "qbinary": lower_qbinary,
    "qlut": lower_qlut,
    "qconcat": lower_qconcat,
    "qpool": lower_qpool,
    "qmean": lower_qmean,
}


def lower_op(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor, plan: TilePlan) -> None:
    """Lowers one operator (its operands already placed in DRAM) with its tile plan."""
    fn = LOWERINGS.get(desc.kind)
    if fn is None:
        raise Unsupported(f"no lowering for operator kind {desc.kind!r}")
    fn(low, desc, list(ins), out, plan)


def plan_and_lower(low: Lowerer, desc: OpDesc, ins: List[DramTensor], out: DramTensor,
                   options: Optional[CompileOptions] = None, override: Optional[TilePlan] = None) -> TilePlan:
    """Asks the tiling stage for the operator's plan (for the DRAM dtypes its operands have), then
    lowers it with that plan; a refusal raises Unsupported with the tiling stage's reason."""
    options = options or CompileOptions(double_buffer=low.double_buffer)
    plan = tiling.plan(desc, low.config, options, [t.dtype for t in ins], override)
    if isinstance(plan, Refusal):
        raise Unsupported(plan.reason)
    lower_op(low, desc, ins, out, plan)
    return plan


def lower_alone(desc: OpDesc, config: NPUConfig, plan: TilePlan,
                dtypes: Optional[Sequence[DType]] = None) -> Tuple[Lowerer, List[DramTensor], DramTensor]:
    """The operator alone, lowered with `plan` into a program of its own that ends: its inputs then
    its output in IO (16-byte aligned), its constants in CONST, its operands stored as `dtypes`
    (default: as the memory plan stores them inside a function). For measuring a plan (the tuner's
    builder) and checking the estimates against the lowered steps."""
    low = Lowerer(config, ConstPool(), plan.double_buffer)
    offset, ins = 0, []
    for t, dt in zip(desc.inputs, dtypes or [storage_dtype(desc, t) for t in desc.inputs]):
        if t.is_const:
            ins.append(low.consts.tensor(t.const, dt))
        else:
            ins.append(DramTensor(Region.IO, offset, tuple(t.shape), dt))
            offset += (ins[-1].nbytes + 15) // 16 * 16
    out = DramTensor(Region.IO, offset, tuple(desc.output.shape), storage_dtype(desc, desc.output))
    plan_and_lower(low, desc, ins, out, CompileOptions(double_buffer=plan.double_buffer), override=plan)
    low.program.emit("end")
    return low, ins, out


__all__ = ["LOWERINGS", "Lowerer", "lower_alone", "lower_op", "plan_and_lower"]
