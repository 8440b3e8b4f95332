"""Typed quantisation records of the integer operators: what tvm_npu.quant computed for one operator,
as the tiling stage and the lowering read it (the MAC operators use quant.ConvQuant)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from ..quant.params import ConvQuant, QParams
from .desc import Unsupported

BINARY_FIELDS = ("a_offset", "a_mult", "a_shift", "b_offset", "b_mult", "b_shift", "left_shift", "o_mult",
                 "o_shift", "o_offset", "act_min", "act_max")


@dataclasses.dataclass(frozen=True)
class BinaryQuant:
    """qadd / qsub / qmul: the v<op> instruction's fields (quant.add_quant / sub_quant / mul_quant)."""

    a_offset: int
    a_mult: int
    a_shift: int
    b_offset: int
    b_mult: int
    b_shift: int
    left_shift: int
    o_mult: int
    o_shift: int
    o_offset: int
    act_min: int
    act_max: int

    def fields(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PoolQuant:
    """qpool: the clamp of vpool (quant.pool_quant)."""

    act_min: int
    act_max: int


@dataclasses.dataclass(frozen=True)
class LutQuant:
    """qlut: the 256-entry int8 table in NPU order (table[x + 128])."""

    table: np.ndarray


@dataclasses.dataclass(frozen=True)
class ConcatQuant:
    """qconcat: per input, None (a byte copy) or the int8[256] table that requantises it (quant.concat_quant)."""

    tables: Tuple[Optional[np.ndarray], ...]


@dataclasses.dataclass(frozen=True)
class MeanQuant:
    """qmean: input and output parameters and the rounding ("real" | "tflite" | "float"), turned into
    the vrequant fields by quant.mean_quant once the reduction size is known."""

    in_q: QParams
    out_q: QParams
    rounding: str = "real"


QuantRecord = Union[ConvQuant, BinaryQuant, PoolQuant, LutQuant, ConcatQuant, MeanQuant]
_BY_KIND = {"qbinary": BinaryQuant, "qpool": PoolQuant, "qlut": LutQuant, "qconcat": ConcatQuant, "qmean": MeanQuant}


def quant_record(kind: str, n_inputs: int, quant: Any) -> QuantRecord:
    """The operator's record, made from the mapping form tvm_npu.quant's functions return when a
    description was written by hand; raises Unsupported naming what is missing."""
    cls = _BY_KIND.get(kind)
    if cls is None or isinstance(quant, cls):
        return quant
    if kind == "qbinary":
        missing = [k for k in BINARY_FIELDS if not isinstance(quant, Mapping) or k not in quant]
        if missing:
            raise Unsupported(f"qbinary quant lacks the binary instruction fields {missing}")
        return BinaryQuant(**{k: int(quant[k]) for k in BINARY_FIELDS})
    if kind == "qpool":
        if not isinstance(quant, Mapping) or "act_min" not in quant or "act_max" not in quant:
            raise Unsupported("qpool quant must be pool_quant's {'act_min', 'act_max'}")
        return PoolQuant(int(quant["act_min"]), int(quant["act_max"]))
    if kind == "qlut":
        if not isinstance(quant, Mapping) or "table" not in quant:
            raise Unsupported("qlut quant must be {'table': int8[256]}")
        return LutQuant(quant["table"])
    if kind == "qconcat":
        tables = quant.get("inputs") if isinstance(quant, Mapping) else quant
        if not isinstance(tables, (list, tuple)) or len(tables) != n_inputs:
            raise Unsupported(f"qconcat quant must be {{'inputs': [None or int8[256]] x {n_inputs}}}")
        return ConcatQuant(tuple(tables))
    if not isinstance(quant, Mapping) or "in_q" not in quant or "out_q" not in quant:
        raise Unsupported("qmean quant must be {'in_q': QParams, 'out_q': QParams}")
    return MeanQuant(quant["in_q"], quant["out_q"], quant.get("rounding", "real"))
