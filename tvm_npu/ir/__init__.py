"""Stage-boundary types on the ground floor: operator descriptions, geometry, tile plans, the NPU
memory scopes and the composite registry. Everything here imports only config and isa."""

from .desc import Activation, OpDesc, TensorDesc, Unsupported, signature
from .plan import (ConcatPlan, IntTilePlan, MacPlan, MeanPlan, Plan, PoolPlan, Refusal, RowPlan, SoftmaxPlan,
                   TilePlan, plan_from_dict, plan_to_dict)
from .registry import OpSpec, lookup

__all__ = ["Activation", "OpDesc", "TensorDesc", "Unsupported", "signature", "ConcatPlan", "IntTilePlan", "MacPlan",
           "MeanPlan", "Plan", "PoolPlan", "Refusal", "RowPlan", "SoftmaxPlan", "TilePlan", "plan_from_dict",
           "plan_to_dict", "OpSpec", "lookup"]
