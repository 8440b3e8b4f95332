"""The tiling stage: `plan(desc, config, options) -> TilePlan | Refusal` for every operator kind.

One place decides every tile: the can-run check asks it (and never lowers), the lowering obeys the
plan it is given (and never re-decides), and the auto-tuner searches the fields of the plan types
(tvm_npu/ir/plan.py). Each family has a default planner (MAC operators: the fitting plan the
performance model's estimate ranks fastest, mac.py / mac_cost.py; the float vector operators: the
candidate plan vector_cost.py's estimate ranks fastest, vector.default; the others: the largest
tiles that fit) and a `needs` function giving the SRAM bytes of any plan of its type, checked by
the one budget function (`ir.memory.over_budget`); a user's plan override
(CompileOptions.plan_overrides) is checked the same way and refused with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Union

from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported, signature
from ..ir.memory import over_budget, storage_dtype
from ..ir.plan import ConcatPlan, IntTilePlan, MacPlan, MeanPlan, PoolPlan, Refusal, RowPlan, SoftmaxPlan, TilePlan
from ..isa import DType
from ..options import CompileOptions
from . import integer, layout, mac, vector

__all__ = ["plan", "needs", "PLANNERS", "Planner"]


@dataclasses.dataclass(frozen=True)
class Planner:
    """How one operator kind is tiled: its plan type, the default choice and the SRAM needs of a plan.
    Both functions take (desc, config, double_buffer or plan, operand storage dtypes)."""

    plan_type: type
    default: Callable[[OpDesc, NPUConfig, bool, Sequence[DType]], TilePlan]
    needs: Callable[[OpDesc, TilePlan, NPUConfig, Sequence[DType]], dict]


def _wide(dtypes: Sequence[DType]) -> bool:
    return bool(dtypes) and dtypes[0] == DType.FP32


PLANNERS: Dict[str, Planner] = {
    "conv2d": Planner(MacPlan, lambda d, c, db, dt: mac.default(d, c, db), lambda d, p, c, dt: mac.needs(d, p, c)),
    "matmul": Planner(MacPlan, lambda d, c, db, dt: mac.default(d, c, db), lambda d, p, c, dt: mac.needs(d, p, c)),
    "binary": Planner(RowPlan, vector.default, lambda d, p, c, dt: vector.elementwise_needs(d, p, dt)),
    "activation": Planner(RowPlan, vector.default, lambda d, p, c, dt: vector.elementwise_needs(d, p, dt)),
    "softmax": Planner(SoftmaxPlan, vector.default, lambda d, p, c, dt: vector.softmax_needs(d, p, _wide(dt))),
    "mean": Planner(MeanPlan, vector.default, lambda d, p, c, dt: vector.mean_needs(d, p)),
    "reduce": Planner(MeanPlan, vector.default, lambda d, p, c, dt: vector.reduce_needs(d, p)),
    "layer_norm": Planner(SoftmaxPlan, vector.default, lambda d, p, c, dt: vector.layer_norm_needs(d, p)),
    "concat": Planner(ConcatPlan, lambda d, c, db, dt: vector.concat(d, c, db),
                      lambda d, p, c, dt: vector.concat_needs(d, p)),
    "layout": Planner(RowPlan, vector.default, lambda d, p, c, dt: layout.layout_needs(d, p, dt)),
    "pool": Planner(PoolPlan, vector.default, lambda d, p, c, dt: vector.pool_needs(d, p)),
    "qbinary": Planner(IntTilePlan, lambda d, c, db, dt: integer.qbinary(d, c, db),
                       lambda d, p, c, dt: integer.qbinary_needs(d, p)),
    "qlut": Planner(IntTilePlan, lambda d, c, db, dt: integer.qlut(d, c, db),
                    lambda d, p, c, dt: integer.qlut_needs(d, p)),
    "qconcat": Planner(ConcatPlan, lambda d, c, db, dt: integer.qconcat(d, c, db),
                       lambda d, p, c, dt: integer.qconcat_needs(d, p)),
    "qpool": Planner(PoolPlan, lambda d, c, db, dt: integer.qpool(d, c, db),
                     lambda d, p, c, dt: integer.qpool_needs(d, p)),
    "qmean": Planner(MeanPlan, lambda d, c, db, dt: integer.qmean(d, c, db),
                     lambda d, p, c, dt: integer.qmean_needs(d, p)),
}

_MAC_CACHE: Dict[tuple, MacPlan] = {}
_VECTOR_CACHE: Dict[tuple, TilePlan] = {}  # vector.default ranks a few dozen candidates: once per signature


def _dtypes(desc: OpDesc, dtypes: Optional[Sequence[DType]]) -> tuple:
    return tuple(dtypes) if dtypes is not None else tuple(storage_dtype(desc, t) for t in desc.inputs)


def needs(desc: OpDesc, plan: TilePlan, config: NPUConfig, dtypes: Optional[Sequence[DType]] = None) -> dict:
    """SRAM bytes per SRAM that `plan` takes for `desc`."""
    return PLANNERS[desc.kind].needs(desc, plan, config, _dtypes(desc, dtypes))


def _check_override(desc: OpDesc, plan: TilePlan, config: NPUConfig, dtypes: tuple) -> Optional[str]:
    planner = PLANNERS[desc.kind]
    if not isinstance(plan, planner.plan_type):
        return f"a {type(plan).__name__} for a {desc.kind} operator (it takes a {planner.plan_type.__name__})"
    why = (mac.illegal(desc, plan) if isinstance(plan, MacPlan) else
           vector.reduction_illegal(desc, plan) if isinstance(plan, MeanPlan) else None)
    if why:
        return f"{plan.to_dict()} is not a legal tiling of this {desc.kind}: {why}"
    why = over_budget(config, planner.needs(desc, plan, config, dtypes))
    return f"the plan {plan.to_dict()} does not fit: {why}" if why else None


def plan(desc: OpDesc, config: NPUConfig, options: Optional[CompileOptions] = None,
         dtypes: Optional[Sequence[DType]] = None, override: Optional[TilePlan] = None) -> Union[TilePlan, Refusal]:
    """The tile plan of one operator, or a Refusal with the reason. `dtypes`: how its operands are
    stored in DRAM (default: as the memory plan stores them unless told otherwise); `override`: a
    plan to check and use instead of the default."""
    options = options or CompileOptions()
    planner = PLANNERS.get(desc.kind)
    if planner is None:
        return Refusal(f"no {'integer vector ' if desc.integer else ''}lowering for operator kind {desc.kind!r}")
    dts = _dtypes(desc, dtypes)
    try:
        if override is not None:
            why = _check_override(desc, override, config, dts)
            return Refusal(f"plan override refused: {why}") if why else override
        if planner.plan_type is MacPlan:
            key = (signature(desc), config, options.double_buffer)
            if key not in _MAC_CACHE:
                _MAC_CACHE[key] = planner.default(desc, config, options.double_buffer, dts)
            return _MAC_CACHE[key]
        if planner.default is vector.default:
            key = (signature(desc), config, options.double_buffer, dts)
            hit = _VECTOR_CACHE.get(key)
            if hit is None:
                if len(_VECTOR_CACHE) > 4096:
                    _VECTOR_CACHE.clear()
                hit = _VECTOR_CACHE[key] = planner.default(desc, config, options.double_buffer, dts)
            return hit
        return planner.default(desc, config, options.double_buffer, dts)
    except Unsupported as e:
        return Refusal(str(e))
