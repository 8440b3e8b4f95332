"""Layout operators (reshape, transpose, slice) as TensorIR: data movement with no arithmetic.

The PrimFunc works on 4-D views. Output element `o[i0, i1, i2, i3]` reads input element `x[j]`
where, per output axis k, input axis `src[k][0]` is indexed `src[k][1] + src[k][2] * i_k`, and every
input axis no output axis walks is held at `fixed[d]`. A transpose is a permutation of the axes, a
strided slice a start and a step per axis, and a reshape of a dense tensor the identity on one
(1, 1, rows, cols) view of both sides (the same bytes in the same order).

Stages: `ld` (the input tile gathered into ACT: the DMA does the transpose or the slice through its
strides), `cp` (a vector-unit copy into a second slot, so that the store never reads the slot the
load two tiles later fills; it also widens or narrows when the input is stored in fp32) and `store`.
The schedule splits output dims 1 and 2 into row tiles (dim 3 whole), computes `ld` at the tile
loop and stores there.
"""

from __future__ import annotations

from typing import Dict, Tuple

from tvm import s_tir, te

from ..ir.memory import ACC, ACT

Mapping = Tuple[Tuple[int, int, int], ...]  # per output axis: (input axis, start, step)

_CACHE: Dict[tuple, object] = {}


def layout_workload(in_shape: Tuple[int, ...], out_shape: Tuple[int, ...], src: Mapping, fixed: Tuple[int, ...],
                    in_dtype: str, out_dtype: str):
    """The unscheduled PrimFunc of one layout operator on 4-D shapes (the tuner's workload)."""
    x = te.placeholder(in_shape, in_dtype, name="in0")

    def gather(*i):
        idx = list(fixed)
        for k, (d, start, step) in enumerate(src):
            idx[d] = start if step == 0 else start + step * i[k] if step != 1 or start else i[k]
        return x[tuple(idx)]

    ld = te.compute(out_shape, gather, name="ld")
    cp = te.compute(out_shape, lambda *i: ld[i].astype(out_dtype), name="cp")
    store = te.compute(out_shape, lambda *i: cp[i], name="store")
    return te.create_prim_func([x, store])


def layout_tile(sch: s_tir.Schedule, in_dtype: str, rows, cols, double_buffer: bool = True) -> None:
    """The layout schedule's steps: rows of dims 1 and 2 per tile (ints, or the tuner's sampled values)."""
    cb = sch.get_sblock("cp")
    i0, i1, i2, i3 = sch.get_loops(cb)
    i1o, i1i = sch.split(i1, [None, rows])
    i2o, i2i = sch.split(i2, [None, cols])
    sch.reorder(i0, i1o, i2o, i1i, i2i, i3)
    lb = sch.get_sblock("ld")
    sch.set_scope(lb, 0, ACC if in_dtype == "float32" else ACT)
    sch.set_scope(cb, 0, ACT)
    sch.compute_at(lb, i2o)
    sch.reverse_compute_at(sch.get_sblock("store"), i2o)
    if double_buffer:
        for blk in (lb, cb):
            sch.annotate(blk, "double_buffer_scope", 0)


def layout_schedule(in_shape: Tuple[int, ...], out_shape: Tuple[int, ...], src: Mapping, fixed: Tuple[int, ...],
                    in_dtype: str, out_dtype: str, rows: int, cols: int, double_buffer: bool = True):
    """The scheduled PrimFunc of one layout operator on 4-D shapes; memoised."""
    key = (tuple(in_shape), tuple(out_shape), tuple(src), tuple(fixed), in_dtype, out_dtype, rows, cols,
           double_buffer)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    sch = s_tir.Schedule(layout_workload(in_shape, out_shape, src, fixed, in_dtype, out_dtype))
    layout_tile(sch, in_dtype, rows, cols, double_buffer)
    _CACHE[key] = (sch, {})
    return _CACHE[key]
