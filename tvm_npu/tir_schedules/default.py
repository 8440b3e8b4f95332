"""The default NPU schedule of the MAC operators, written with TensorIR schedule primitives.

For a Plan (rows, cols, depth: the schedule parameters the tuner searches), `schedule(kernel, plan)`:

1. splits the output rows, output channels and input channels (K) into tiles and orders the tile
   loops `n, cols_o, rows_o, depth_o` (each weight tile is reused by every row tile);
2. keeps the accumulator in the ACC scope (`set_scope`) and splits off its zeroing
   (`decompose_reduction`), which the code generator turns into `accumulate=0` on the first chunk;
3. `cache_read`s the input tile into ACT and the weight tile into WGT at the K-chunk loop (the weights
   once per output-channel tile when K is one chunk), inlining the padding stages into them, so
   each cache block is one DMA load with its halo;
4. places the epilogue (bias from an ACC cache, activation, rounding) in ACT and the store at the row
   tile (`reverse_compute_at`);
5. marks the input, weight, bias and output buffers `double_buffer_scope` (two SRAM slots each);
6. tensorizes the inner tile onto the NPU intrinsic of intrinsics.py.
"""

from __future__ import annotations

from typing import Dict, Tuple

from tvm import s_tir

from ..ir.desc import OpDesc, Unsupported, signature
from ..ir.memory import ACC, ACT, WGT
from ..ir.plan import INPUTS_RESIDENT, MacPlan
from . import intrinsics as I
from .kernels import Kernel, conv2d_kernel, gemm_kernel

_CACHE: Dict[tuple, Tuple[Kernel, object]] = {}


def _dtypes(kernel: Kernel) -> Tuple[str, str, str]:
    f = kernel.func
    x, w = f.params[0], f.params[1]
    acc = "int32" if "int" in str(x.ty.dtype) else "float32"
    return str(x.ty.dtype), str(w.ty.dtype), acc


def _finish(sch: s_tir.Schedule, kernel: Kernel, mac, tile_outer, w_at, bias_at, double_buffer: bool):
    """Steps 3-5 for both operator kinds; `tile_outer` is the loop the epilogue and store go under."""
    x_cache = sch.cache_read(mac, 0, ACT)
    w_cache = sch.cache_read(mac, 1, WGT)
    sch.compute_at(x_cache, w_at[1])
    sch.compute_at(w_cache, w_at[0])
    for stage in ("ap" if kernel.kind == "gemm" else "xp", "wp"):  # the padding stages become the DMA's
        sch.compute_inline(sch.get_sblock(stage))
    epi = sch.get_sblock("epilogue")
    sch.set_scope(epi, 0, ACT)
    sch.reverse_compute_at(epi, tile_outer)
    sch.reverse_compute_at(sch.get_sblock("store"), tile_outer)
    cached = [x_cache, w_cache, epi]
    for i, name in enumerate(p for p in ("B", "Q") if p in kernel.params):  # epilogue reads acc, [B], [Q]
        cache = sch.cache_read(epi, 1 + i, ACC)
        sch.compute_at(cache, bias_at)
        cached.append(cache)
    if double_buffer:
        for blk in cached:
            sch.annotate(blk, "double_buffer_scope", 0)


def quant_key(desc: OpDesc):
    """What of the quantisation the PrimFunc depends on (the halo value, input offset, epilogue)."""
    q = desc.quant
    return None if q is None else (q.a_offset, q.pad_value, q.o_offset, q.act_min, q.act_max)


def schedule(desc: OpDesc, plan: MacPlan, double_buffer: bool = True) -> Tuple[Kernel, s_tir.Schedule]:
    """Builds the operator's PrimFunc for `plan` and applies the default NPU schedule (memoised on
    what the schedule depends on: shapes, attributes, activation, plan)."""
    key = (signature(desc), plan, double_buffer, quant_key(desc))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    if desc.kind == "conv2d":
        kernel = conv2d_kernel(desc, plan)
        sch = _schedule_conv(kernel, plan, double_buffer)
    elif desc.kind == "matmul":
        kernel = gemm_kernel(desc, plan)
        sch = _schedule_gemm(kernel, plan, double_buffer)
    else:
        raise Unsupported(f"{desc.kind} has no TensorIR schedule")
    _CACHE[key] = (kernel, sch)
    return kernel, sch


def _schedule_conv(kernel: Kernel, plan: MacPlan, double_buffer: bool) -> s_tir.Schedule:
    a = kernel.attrs
    dt, wdt, adt = _dtypes(kernel)
    sch = s_tir.Schedule(kernel.func)
    mac = sch.get_sblock("mac")
    loops = sch.get_loops(mac)
    dense = kernel.kind == "conv2d" and not a["ng"]
    if kernel.kind == "dwconv2d":
        n, y, x, c, ky, kx = loops
    else:
        n, y, x, c, ky, kx, ci = loops
    y_o, y_i = sch.split(y, [None, plan.rows])
    c_o, c_i = sch.split(c, [None, plan.cols])
    inputs_resident = plan.order == INPUTS_RESIDENT
    if dense and inputs_resident:  # row tiles outside: the input tile stays while channel tiles pass
        ci_o, ci_i = sch.split(ci, [None, plan.depth])
        sch.reorder(n, y_o, c_o, ci_o, y_i, x, c_i, ky, kx, ci_i)
        chunk = ci_o
    elif dense:
        ci_o, ci_i = sch.split(ci, [None, plan.depth])
        sch.reorder(n, c_o, y_o, ci_o, y_i, x, c_i, ky, kx, ci_i)
        chunk = ci_o
    elif inputs_resident:
        raise Unsupported(f"the {plan.order} loop order needs a dense convolution")
    elif kernel.kind == "conv2d":  # grouped: every tile holds whole groups
        sch.reorder(n, c_o, y_o, y_i, x, c_i, ky, kx, ci)
        chunk = y_o
    else:
        sch.reorder(n, c_o, y_o, y_i, x, c_i, ky, kx)
        chunk = y_o
    sch.set_scope(mac, 0, ACC)
    if inputs_resident:  # (weights at the K chunk, input at the row tile when K is one chunk)
        _finish(sch, kernel, mac, c_o, (chunk, y_o if a["depth_chunks"] == 1 else chunk), c_o, double_buffer)
    else:
        w_loop = c_o if a["depth_chunks"] == 1 else chunk
        _finish(sch, kernel, mac, y_o, (w_loop, chunk), c_o, double_buffer)
    sch.decompose_reduction(mac, chunk if dense else y_i)
    if kernel.kind == "dwconv2d":
        intrin = I.dwconv2d_intrin(plan.rows, a["ow"], plan.cols, a["kh"], a["kw"], a["mult"], a["sh"], a["sw"],
                                   a["dh"], a["dw"], dt, wdt, adt, a["a_offset"])
    else:
        intrin = I.conv2d_intrin(plan.rows, a["ow"], plan.cols, a["kh"], a["kw"], plan.depth, a["sh"], a["sw"],
                                 a["dh"], a["dw"], a["ng"], a["cg"], dt, wdt, adt, a["a_offset"])
    sch.tensorize(y_i, intrin)
    return sch


def _schedule_gemm(kernel: Kernel, plan: MacPlan, double_buffer: bool) -> s_tir.Schedule:
    dt, wdt, adt = _dtypes(kernel)
    sch = s_tir.Schedule(kernel.func)
    mac = sch.get_sblock("mac")
    b, i, j, k = sch.get_loops(mac)
    i_o, i_i = sch.split(i, [None, plan.rows])
    j_o, j_i = sch.split(j, [None, plan.cols])
    k_o, k_i = sch.split(k, [None, plan.depth])
    sch.set_scope(mac, 0, ACC)
    if plan.order == INPUTS_RESIDENT:  # row tiles outside: the input tile stays while column tiles pass
        sch.reorder(b, i_o, j_o, k_o, i_i, j_i, k_i)
        _finish(sch, kernel, mac, j_o, (k_o, i_o if kernel.attrs["depth_chunks"] == 1 else k_o), j_o, double_buffer)
    else:
        sch.reorder(b, j_o, i_o, k_o, i_i, j_i, k_i)
        w_loop = j_o if kernel.attrs["depth_chunks"] == 1 else k_o
        _finish(sch, kernel, mac, i_o, (w_loop, k_o), j_o, double_buffer)
    sch.decompose_reduction(mac, k_o)
    sch.tensorize(i_i, I.gemm_intrin(plan.rows, plan.depth, plan.cols, kernel.attrs["batched_rhs"], dt, wdt, adt,
                                     kernel.attrs["a_offset"]))
    return sch
