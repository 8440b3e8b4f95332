"""The analytic cycle estimate of a float vector-unit plan (elementwise, activation, layout, softmax,
layer norm, mean, sum / max / min, pooling), without lowering.

`estimate(desc, plan, config, dtypes)` rebuilds the tile steps lowering/vector.py and
lowering/layout.py emit for the plan, as per-step queue cycles, from the tile loops of the
operator's TensorIR schedule (tir_schedules/vector.py, tir_schedules/layout.py):

* elementwise and layout (RowPlan): tile loops d0, d1 / t1, d2 / t2 of the 4-D view (d3 whole); per
  tile, every operand's load (a broadcast operand loads its broadcast shape, an fp32 operand 4
  bytes an element), the vector passes of the operator and the store;
* softmax and layer norm (SoftmaxPlan): row tiles; per tile the load, the passes of the stages
  (row reductions cost the whole tile, per-row scalars one element a row) and the store;
* mean and reduce (MeanPlan): outer-row tiles, inner-column tiles, reduction chunks;
* pooling (PoolPlan): channel tiles, output-row tiles; the input tile moves its real rows only.

Constants loaded once (activation scalars, -1, 1/n, epsilon, gamma and beta) join the first step.
Each instruction is costed with perf_model's functions, and the steps go through
perf_model.PipelineClock with the steady-state shortcut of tiling.mac_cost (a repeated block whose
clock moves by a constant per repetition is added at once), so a plan of thousands of tiles costs
a few dozen simulated steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import layout_geom, mean_axes, pad4, pool_geometry
from ..ir.memory import storage_dtype
from ..ir.plan import MeanPlan, PoolPlan, RowPlan, SoftmaxPlan, TilePlan
from ..isa import DType
from ..isa.spec import DTYPE_SIZE
from ..perf_model import PipelineClock, dma_cycles, vector_cycles
from .mac_cost import _run, _runs

__all__ = ["estimate", "tiles"]

F16, F32 = DType.FP16, DType.FP32
# vector passes of an activation epilogue (lowering/emit.Lowerer.epilogue) and its scalar constants
_ACT_PASSES = {"leaky_relu": 2, "silu": 2, "hard_sigmoid": 3, "hard_swish": 4}
_ACT_SCALARS = {"leaky_relu": 1, "hard_sigmoid": 2, "hard_swish": 2}
# vector passes of the unary operators (lowering/vector._unary) and whether they load the constant -1
_UNARY_PASSES = {"neg": 1, "abs": 2, "exp": 1, "sqrt": 2, "reciprocal": 1, "square": 1}


def _nest(axes: Sequence[list], leaf: Callable[..., tuple], extents: tuple = ()) -> list:
    """The steps of nested tile loops (outermost first, each a list of runs (count, extent)) as the
    blocks of mac_cost._run: a step (lc, cc, sc) per innermost tile, repetitions per run."""
    if not axes:
        return [leaf(*extents)]
    items: list = []
    for n, e in axes[0]:
        sub = _nest(axes[1:], leaf, extents + (e,))
        if n == 1:
            items += sub
        else:
            items.append((n, sub))
    return items


def _split(total: int, tile: int) -> list:
    return _runs(total, max(1, min(tile, total)))


# ---- elementwise (binary, activation) and layout: RowPlan ------------------------------------------

def _elementwise(desc: OpDesc, plan: RowPlan, cfg: NPUConfig, dtypes: Sequence[DType]) -> tuple:
    d0, d1, d2, d3 = pad4(desc.output.shape)
    ops = [pad4(t.shape) for t in desc.inputs]
    consts = [d == F32 for d in dtypes]
    binary = desc.kind == "binary"
    wide = binary and any(consts)
    if any(consts) and not wide:
        raise Unsupported(f"{desc.kind} cannot read a float32 operand")
    out_size = DTYPE_SIZE[storage_dtype(desc, desc.output)]
    sizes = [DTYPE_SIZE[d] for d in dtypes]
    op = desc.attrs.get("op") if binary else None
    act = desc.activation
    first = 0
    if binary:
        # per operand tile: widen (fp16 operands of a wide op), then the operator's passes on the tile
        passes = {"prelu": 4}.get(op, 1) + (1 if wide else 0)  # + the rounding
    elif act.kind in _UNARY_PASSES:
        passes = _UNARY_PASSES[act.kind]
        if act.kind in ("neg", "abs"):
            first = dma_cycles(2, cfg)
    else:
        passes = 1 + _ACT_PASSES.get(act.kind, 1) + (1 if act.wide else 0)  # widen, epilogue, [rounding]
        first = _ACT_SCALARS.get(act.kind, 0) * dma_cycles(4 if act.wide else 2, cfg)

    def leaf(_e0: int, e1: int, e2: int) -> tuple:
        tile = e1 * e2 * d3
        lc = cc = 0
        for k, s in enumerate(ops):
            n = (e1 if s[1] != 1 else 1) * (e2 if s[2] != 1 else 1) * s[3]
            lc += dma_cycles(n * sizes[k], cfg)
            if wide and not consts[k]:
                cc += vector_cycles(n, cfg)
            if op == "div" and k == 1:
                cc += vector_cycles(n, cfg)  # the reciprocal of the divisor's tile
        cc += passes * vector_cycles(tile, cfg)
        return lc, cc, dma_cycles(tile * out_size, cfg)

    axes = [[(d0, 1)], _split(d1, plan.t1), _split(d2, plan.t2)]
    return _nest(axes, leaf), first


def _layout(desc: OpDesc, plan: RowPlan, cfg: NPUConfig, dtypes: Sequence[DType]) -> tuple:
    d0, d1, d2, d3 = layout_geom(desc).out_shape
    src = dtypes[0] if dtypes else F16
    in_size = DTYPE_SIZE[src]
    out_size = DTYPE_SIZE[F16 if src == F32 else src]

    def leaf(_e0: int, e1: int, e2: int) -> tuple:
        tile = e1 * e2 * d3
        return dma_cycles(tile * in_size, cfg), vector_cycles(tile, cfg), dma_cycles(tile * out_size, cfg)

    axes = [[(d0, 1)], _split(d1, plan.t1), _split(d2, plan.t2)]
    return _nest(axes, leaf), 0


# ---- softmax and layer norm: SoftmaxPlan --------------------------------------------------------

def _softmax(desc: OpDesc, plan: SoftmaxPlan, cfg: NPUConfig, dtypes: Sequence[DType]) -> tuple:
    shape = desc.inputs[0].shape
    rows, length = math.prod(shape[:-1]), shape[-1]
    wide = bool(dtypes) and dtypes[0] == F32
    in_size = 4 if wide else 2

    def leaf(e: int) -> tuple:
        t, v = e * length, vector_cycles
        # mx; x - mx [fp32: rounded], exp; row sum, its reciprocal, to fp16; e * 1/sum
        cc = v(t, cfg) * (4 + wide + 1) + 2 * v(e, cfg)
        return dma_cycles(t * in_size, cfg), cc, dma_cycles(t * 2, cfg)

    return _nest([_split(rows, plan.rows)], leaf), 0


def _layer_norm(desc: OpDesc, plan: SoftmaxPlan, cfg: NPUConfig, dtypes: Sequence[DType]) -> tuple:
    shape = desc.inputs[0].shape
    rows, length = math.prod(shape[:-1]), shape[-1]
    first = 2 * dma_cycles(4, cfg) + 2 * dma_cycles(length * 4, cfg)  # 1/n, epsilon, gamma, beta

    def leaf(e: int) -> tuple:
        t, v = e * length, vector_cycles
        # widen; sum; subtract; square; sum; * gamma, * 1/std, + beta; round -- and per row: * 1/n twice,
        # + epsilon, rsqrt
        cc = 9 * v(t, cfg) + 4 * v(e, cfg)
        return dma_cycles(t * 2, cfg), cc, dma_cycles(t * 2, cfg)

    return _nest([_split(rows, plan.rows)], leaf), first


# ---- mean and sum / max / min: MeanPlan -----------------------------------------------------------

def _mean(desc: OpDesc, plan: MeanPlan, cfg: NPUConfig, dtypes: Sequence[DType]) -> tuple:
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])

    def leaf(e: int) -> tuple:
        t, o = e * red * inner, e * inner
        # the sum, * 1/count, the rounding
        return dma_cycles(t * 2, cfg), vector_cycles(t, cfg) + 2 * vector_cycles(o, cfg), dma_cycles(o * 2, cfg)

    return _nest([_split(outer, plan.outer)], leaf), dma_cycles(4, cfg)


def _reduce(desc: OpDesc, plan: MeanPlan, cfg: NPUConfig, dtypes: Sequence[DType]) -> tuple:
    outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
    op = desc.attrs["op"]
    chunked = plan.chunk < red
    v = vector_cycles

    def chunk(eo: int, ei: int, rr: int, first: bool, last: bool) -> tuple:
        t, o = eo * rr * ei, eo * ei
        cc = v(t, cfg) * (2 if op == "min" else 1)  # [negate], reduce
        if chunked:
            cc += 0 if first else v(o, cfg)  # combine with the running result
            cc += v(o, cfg) if last else 0  # the result into the output slot
        else:
            cc += v(o, cfg) if op != "max" else 0  # sum: rounding; min: negate back
        return dma_cycles(t * 2, cfg), cc, dma_cycles(o * 2, cfg) if last else 0

    def tile(eo: int, ei: int) -> list:
        runs = _split(red, plan.chunk)
        if len(runs) == 1 and runs[0][0] == 1:
            return [chunk(eo, ei, red, True, True)]
        n_chunks = sum(n for n, _ in runs)
        r0, rl = runs[0][1], runs[-1][1]
        items: list = [chunk(eo, ei, r0, True, False)]
        if n_chunks > 2:
            items.append((n_chunks - 2, [chunk(eo, ei, r0, False, False)]))
        items.append(chunk(eo, ei, rl, False, True))
        return items

    items: list = []
    for no, eo in _split(outer, plan.outer):
        sub: list = []
        for ni, ei in _split(inner, plan.inner):
            sub += tile(eo, ei) if ni == 1 else [(ni, tile(eo, ei))]
        items += sub if no == 1 else [(no, sub)]
    return items, dma_cycles(2, cfg) if op == "min" else 0


# ---- pooling: PoolPlan ------------------------------------------------------------------------------

def _pool(desc: OpDesc, plan: PoolPlan, cfg: NPUConfig, dtypes: Sequence[DType]) -> tuple:

    h, w, c, oh, ow, kh, sh = pool_geometry(desc)
    kw = desc.attrs["pool_size"][1]
    pt = desc.attrs["padding"][0]
    n = desc.inputs[0].shape[0]
    rows = max(1, min(plan.rows, oh))

    def row_tile(r0: int, r1: int) -> int:
        """Real input rows a tile of output rows r0..r1 reads."""
        lo, hi = r0 * sh, (r1 - 1) * sh + kh
        return max(0, min(hi, pt + h) - max(lo, pt))

    runs: list = []  # (count, output rows, input rows)
    for r0 in range(0, oh, rows):
        r1 = min(r0 + rows, oh)
        key = [r1 - r0, row_tile(r0, r1)]
        if runs and runs[-1][1:] == key:
            runs[-1][0] += 1
        else:
            runs.append([1, *key])

    def leaf(tc: int, orows: int, irows: int) -> tuple:
        o = orows * ow * tc
        return dma_cycles(irows * w * tc * 2, cfg), vector_cycles(o * kh * kw, cfg), dma_cycles(o * 2, cfg)

    items: list = []
    for nc, tc in _split(c, plan.channels):
        sub: list = []
        for nr, orows, irows in runs:
            sub += [leaf(tc, orows, irows)] if nr == 1 else [(nr, [leaf(tc, orows, irows)])]
        items += sub if nc == 1 else [(nc, sub)]
    return ([(n, items)] if n > 1 else items), 0


_KINDS = {"binary": _elementwise, "activation": _elementwise, "layout": _layout, "softmax": _softmax,
          "layer_norm": _layer_norm, "mean": _mean, "reduce": _reduce, "pool": _pool}


def estimate(desc: OpDesc, plan: TilePlan, config: NPUConfig, dtypes: Sequence[DType]) -> int:
    """Predicted cycles of `desc` lowered with `plan` (what perf_model.pipeline_cycles says of the
    lowered steps), from the tile loops alone. `dtypes`: the operands' storage dtypes."""
    items, first = _KINDS[desc.kind](desc, plan, config, dtypes)
    clock = PipelineClock(config, plan.double_buffer)
    _run(clock, items, [first])
    return clock.end()


def tiles(desc: OpDesc, plan: TilePlan) -> int:
    """How many tile steps the plan's program has (the tie-breaker: fewer is cheaper to emit)."""
    if isinstance(plan, RowPlan):
        d0, d1, d2, _ = layout_geom(desc).out_shape if desc.kind == "layout" else pad4(desc.output.shape)
        return d0 * -(-d1 // plan.t1) * -(-d2 // plan.t2)
    if isinstance(plan, SoftmaxPlan):
        return -(-math.prod(desc.inputs[0].shape[:-1]) // plan.rows)
    if isinstance(plan, MeanPlan):
        outer, red, inner = mean_axes(desc.inputs[0].shape, desc.attrs["axis"])
        return -(-outer // plan.outer) * -(-inner // plan.inner) * -(-red // plan.chunk)
    if isinstance(plan, PoolPlan):

        _, _, c, oh, _, _, _ = pool_geometry(desc)
        return desc.inputs[0].shape[0] * -(-c // plan.channels) * -(-oh // plan.rows)
    raise TypeError(f"no vector estimate for a {type(plan).__name__}")
