"""Operator descriptions: what a matched NPU composite is, in plain Python values (the stage boundary
between pattern matching and every later stage: checks, tiling, scheduling, lowering)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


class Unsupported(Exception):
    """Raised by any stage that cannot take an operator; the message is the reason."""


@dataclasses.dataclass
class TensorDesc:
    shape: Tuple[int, ...]
    dtype: str
    const: Optional[np.ndarray] = None  # the data when the operand is a Relax constant

    @property
    def is_const(self) -> bool:
        return self.const is not None


@dataclasses.dataclass
class Activation:
    kind: str  # "relu", "clip", "sigmoid", ... (relay_ext.ops.ACTIVATIONS values)
    lo: float = float("-inf")  # clip bounds
    hi: float = float("inf")
    alpha: float = 0.0  # leaky relu slope

    @property
    def temporary(self) -> bool:
        """Its epilogue needs a temporary tile beside the one it works on (x * f(x) or max(x, a x)):
        the lowering allocates it and the tiling stage counts it."""
        return self.kind in ("silu", "leaky_relu", "hard_swish")

    @property
    def wide(self) -> bool:
        """Alone (not after a MAC operator) it runs in fp32 on ACC with fp32 constants, rounded once:
        an fp16 constant (fp16(1/6) is 2.4e-4 low) would bias every result the same way."""
        return self.kind in ("hard_sigmoid", "hard_swish")


@dataclasses.dataclass
class OpDesc:
    """One NPU operator: what the constraints check, the tiling stage plans and the lowering builds.

    `kind` is the lowering family (the key of the dispatch tables of tiling and lowering): conv2d |
    matmul | binary | activation | pool | softmax | mean | concat for float composites, and the same
    conv2d / matmul plus qlut | qbinary | qpool | qmean | qconcat for integer ones (`integer`)."""

    composite: str  # the pattern name, e.g. "npu.conv2d_bias_act"
    kind: str
    inputs: List[TensorDesc]  # activations first, then constants (weight, bias)
    output: TensorDesc
    attrs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    activation: Optional[Activation] = None
    sources: List[str] = dataclasses.field(default_factory=list)  # Relax ops covered, in order
    exprs: List[Any] = dataclasses.field(default_factory=list, repr=False)  # the Relax operand of each input
    quant: Any = None  # integer operators: their ir.quant.QuantRecord (quant.ConvQuant for MAC operators)

    @property
    def integer(self) -> bool:
        """Runs on the integer datapath (its parameters come from tvm_npu.quant)."""
        return self.quant is not None


def signature(desc: OpDesc) -> tuple:
    """What tiling and scheduling depend on (shapes, dtypes, attributes, activation), not the values
    of weights or quantisation parameters."""
    act = desc.activation
    return (desc.kind, desc.integer, tuple((t.shape, t.dtype, t.is_const) for t in desc.inputs), desc.output.shape,
            desc.output.dtype, tuple(sorted((k, str(v)) for k, v in desc.attrs.items())),
            None if act is None else (act.kind, act.lo, act.hi, act.alpha))


@dataclasses.dataclass
class FunctionOp:
    """One operator of an NPU function: the value it defines, its description, and for each input
    of the description the function value it reads (None: a constant of the description)."""

    result: Any  # opaque key of the value (the Relax Var)
    name: str  # the binding's name in the partitioned function
    desc: OpDesc
    operands: List[Any]
    shape: Tuple[int, ...]
    dtype: str


@dataclasses.dataclass
class FunctionDesc:
    """An NPU function read once: its parameters, operators in order, and outputs (opaque value keys)."""

    params: List[Tuple[Any, str, Tuple[int, ...], str]]  # (key, name, shape, dtype)
    ops: List[FunctionOp]
    outputs: List[Any]
