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
        sch = _schedule(kernel, plan, double_buffer)
    elif desc.kind == "matmul":
        kernel = gemm_kernel(desc, plan)
        sch = _schedule(kernel, plan, double_buffer)
    else:
        raise Unsupported(f"{desc.kind} has no TensorIR schedule")
    _CACHE[key] = (kernel, sch)
    return kernel, sch


def tile_loops(sch: s_tir.Schedule, kernel: Kernel, rows, cols, depth, inputs_resident: bool, whole_k: bool,
               double_buffer: bool = True, disable_predication: bool = False):
    """Steps 1-5 on the `mac` block of `kernel`: the tile loops of rows x cols x depth in the loop
    order (`inputs_resident`: row tiles outside), caches, epilogue, store and double buffering
    (`whole_k`: K is one chunk, so the resident operand is cached at its tile loop). The sizes are ints,
    or sampled values in a design space (tvm_npu/tuning/space.py, which splits the unpadded kernel with
    `disable_predication`). Returns the loop step 6 tensorizes."""
    split = lambda loop, f: sch.split(loop, [None, f], disable_predication=disable_predication)  # noqa: E731
    mac = sch.get_sblock("mac")
    loops = sch.get_loops(mac)
    if kernel.kind == "gemm":
        b, i, j, k = loops
        i_o, i_i = split(i, rows)
        j_o, j_i = split(j, cols)
        k_o, k_i = split(k, depth)
        sch.set_scope(mac, 0, ACC)
        if inputs_resident:  # row tiles outside: the input tile stays while column tiles pass
            sch.reorder(b, i_o, j_o, k_o, i_i, j_i, k_i)
            _finish(sch, kernel, mac, j_o, (k_o, i_o if whole_k else k_o), j_o, double_buffer)
        else:
            sch.reorder(b, j_o, i_o, k_o, i_i, j_i, k_i)
            _finish(sch, kernel, mac, i_o, (j_o if whole_k else k_o, k_o), j_o, double_buffer)
        sch.decompose_reduction(mac, k_o)
        return i_i
    dense = kernel.kind == "conv2d" and not kernel.attrs["ng"]
    if kernel.kind == "dwconv2d":
        n, y, x, c, ky, kx = loops
    else:
        n, y, x, c, ky, kx, ci = loops
    y_o, y_i = split(y, rows)
    c_o, c_i = split(c, cols)
    if dense:  # (inputs resident: row tiles outside, the input tile stays while channel tiles pass)
        ci_o, ci_i = split(ci, depth)
        outer = (y_o, c_o) if inputs_resident else (c_o, y_o)
        sch.reorder(n, *outer, ci_o, y_i, x, c_i, ky, kx, ci_i)
        chunk = ci_o
    elif kernel.kind == "conv2d":  # grouped: every tile holds whole groups
        sch.reorder(n, c_o, y_o, y_i, x, c_i, ky, kx, ci)
        chunk = y_o
    else:
        sch.reorder(n, c_o, y_o, y_i, x, c_i, ky, kx)
        chunk = y_o
    sch.set_scope(mac, 0, ACC)
    if inputs_resident:  # (weights at the K chunk, input at the row tile when K is one chunk)
        _finish(sch, kernel, mac, c_o, (chunk, y_o if whole_k else chunk), c_o, double_buffer)
    else:
        _finish(sch, kernel, mac, y_o, (c_o if whole_k else chunk, chunk), c_o, double_buffer)
    sch.decompose_reduction(mac, chunk if dense else y_i)
    return y_i


def intrinsic(kernel: Kernel, rows: int, cols: int, depth: int) -> str:
    """Step 6: the NPU intrinsic of the inner tile of a concrete plan."""
    a = kernel.attrs
    dt, wdt, adt = _dtypes(kernel)
    if kernel.kind == "gemm":
        return I.gemm_intrin(rows, depth, cols, a["batched_rhs"], dt, wdt, adt, a["a_offset"])
    if kernel.kind == "dwconv2d":
        return I.dwconv2d_intrin(rows, a["ow"], cols, a["kh"], a["kw"], a["mult"], a["sh"], a["sw"], a["dh"], a["dw"],
                                 dt, wdt, adt, a["a_offset"])
    return I.conv2d_intrin(rows, a["ow"], cols, a["kh"], a["kw"], depth, a["sh"], a["sw"], a["dh"], a["dw"], a["ng"],
                           a["cg"], dt, wdt, adt, a["a_offset"])


def _schedule(kernel: Kernel, plan: MacPlan, double_buffer: bool) -> s_tir.Schedule:
    inputs_resident = plan.order == INPUTS_RESIDENT
    if inputs_resident and kernel.kind != "gemm" and not (kernel.kind == "conv2d" and not kernel.attrs["ng"]):
        raise Unsupported(f"the {plan.order} loop order needs a dense convolution")
    sch = s_tir.Schedule(kernel.func)
    tile = tile_loops(sch, kernel, plan.rows, plan.cols, plan.depth, inputs_resident,
                      kernel.attrs["depth_chunks"] == 1, double_buffer)
    sch.tensorize(tile, intrinsic(kernel, plan.rows, plan.cols, plan.depth))
    return sch
