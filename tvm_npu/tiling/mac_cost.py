"""The analytic cycle estimate of a MAC plan (conv2d, depthwise, grouped, matmul), without lowering.

`estimate(desc, plan, config)` rebuilds the tile steps the lowering would emit for the plan from the
loop structure of the default schedule (tir_schedules/default.py) alone, as per-step queue cycles:

* the loop nest: weights resident `n, cols, rows, depth`, inputs resident `n, rows, cols, depth`
  (dense convolutions and matmuls), depthwise and grouped `n, cols, rows`;
* the loads of each step and where they sit in the nest: the input tile with its halo (only its
  real rows and columns are moved: the padding is the DMA's), the weight tile (once per column
  tile when K is one chunk and the weights stay, else per K chunk), bias and the requantisation
  table per column tile (inputs resident: a step of their own before the epilogue), the
  activation's scalar constants once;
* per step, the MAC instruction of its tile, and on the last K chunk the epilogue on the vector
  unit (bias, activation or requantisation) and the store;
* a new step wherever a load follows computes or stores (how lowering/mac.py groups events).

Each instruction is costed with perf_model's functions (the emulator's cost table) and the steps
go through perf_model.PipelineClock, the recurrence `pipeline_cycles` applies to lowered steps. Tile
loops are repeated blocks whose clock state soon moves by a constant per repetition (a steady
state); from then on whole repetitions are added at once, so the cost of an estimate grows with
the number of distinct edge tiles, not with the number of tiles.

`lower_bound(...)`: the busiest queue's total (the steps cannot finish before any one queue has
done its work), cheap enough to order and prune the whole plan space (tiling.mac.default).
"""

from __future__ import annotations

from ..config import NPUConfig
from ..ir.desc import OpDesc, signature
from ..ir.geometry import ConvGeom, conv_geom, matmul_batches, matmul_geom
from ..ir.plan import INPUTS_RESIDENT, MacPlan
from ..perf_model import (
    PipelineClock,
    conv2d_cycles,
    dma_cycles,
    dwconv2d_cycles,
    gemm_cycles,
    vector_cycles,
)

__all__ = ["Layer", "bounds", "estimate", "layer_of", "lower_bound", "steps"]

# vector passes of a float activation epilogue (lowering/emit.Lowerer.epilogue) and its scalar loads
_ACT_PASSES = {"leaky_relu": 2, "silu": 2, "hard_sigmoid": 3, "hard_swish": 4}
_ACT_SCALARS = {"leaky_relu": 1, "hard_sigmoid": 2, "hard_swish": 2}


class Layer:
    """What the estimate needs of an operator and its per-tile instruction cycles, read once per
    (operator, configuration): plans vary, this does not; the per-axis sums of the bound are memoised."""

    __slots__ = (
        "bias",
        "cfg",
        "cin",
        "const_lc",
        "cout",
        "epi",
        "esize",
        "g",
        "geo",
        "half",
        "kind",
        "memo",
        "n",
        "ow",
        "rows",
        "table",
    )

    def __init__(self, desc: OpDesc, config: NPUConfig):
        quant = desc.quant is not None
        self.cfg = config
        self.memo: dict = {}
        self.half = not quant  # float MAC operators run fp16 (half rate); integer ones int8
        self.esize = 1 if quant else 2  # bytes per activation, weight and output element
        self.bias = len(desc.inputs) > 2
        self.table = quant  # the per-channel (multiplier, shift) table in ACC
        act = None if quant else desc.activation
        self.epi = int(self.bias) + 1 + (0 if act is None else _ACT_PASSES.get(act.kind, 1))  # + the rounding
        self.const_lc = (0 if act is None else _ACT_SCALARS.get(act.kind, 0)) * dma_cycles(4, config)
        if desc.kind == "conv2d":
            g = conv_geom(desc)
            self.g = g
            self.kind = "dw" if g.depthwise else ("grouped" if g.groups > 1 else "conv")
            self.n, self.rows, self.ow, self.cin, self.cout = g.n, g.oh, g.ow, g.cg, g.cout
            self.geo = (g.h, g.w, g.sh, g.kh, g.dh, g.pad[0])
        else:
            rows, k, n = matmul_geom(desc)
            self.g = None
            self.kind = "gemm"
            self.n, self.rows, self.ow, self.cin, self.cout = matmul_batches(desc), rows, 1, k, n
            self.geo = None

    @property
    def dense(self) -> bool:
        """K is chunked by the plan's depth (dense convolutions and matmuls)."""
        return self.kind in ("conv", "gemm")

    # ---- one instruction of a tile ----------------------------------------------------------------
    def x_load(self, in_rows: int, depth: int, cols: int) -> int:
        if self.kind == "gemm":
            return dma_cycles(in_rows * depth * self.esize, self.cfg)
        g: ConvGeom = self.g
        if self.kind == "dw":
            chans = cols * g.cin // g.cout
        elif self.kind == "grouped":
            chans = cols // g.ng * g.cg
        else:
            chans = depth
        return dma_cycles(in_rows * g.w * chans * self.esize, self.cfg)

    def w_load(self, depth: int, cols: int) -> int:
        if self.kind == "gemm":
            return dma_cycles(depth * cols * self.esize, self.cfg)
        g: ConvGeom = self.g
        cg = 1 if self.kind == "dw" else (g.cg if self.kind == "grouped" else depth)
        return dma_cycles(g.kh * g.kw * cg * cols * self.esize, self.cfg)

    def chan_loads(self, cols: int) -> int:
        """Bias and requantisation table of a column tile."""
        c = dma_cycles(cols * 4, self.cfg) if self.bias else 0
        return c + (dma_cycles(cols * 8, self.cfg) if self.table else 0)

    def mac(self, out_rows: int, depth: int, cols: int) -> int:
        cfg, m = self.cfg, out_rows * self.ow
        if self.kind == "gemm":
            return gemm_cycles(m, cols, depth, self.half, cfg)
        g: ConvGeom = self.g
        if self.kind == "dw":
            return dwconv2d_cycles(m, g.kh, g.kw, cols, self.half, cfg)
        if self.kind == "grouped":
            return conv2d_cycles(m, g.ng, g.kh, g.kw, g.cg, cols // g.ng, self.half, cfg)
        return conv2d_cycles(m, cols, g.kh, g.kw, depth, 1, self.half, cfg)

    def epilogue(self, out_rows: int, cols: int) -> int:
        return self.epi * vector_cycles(out_rows * self.ow * cols, self.cfg)

    def store(self, out_rows: int, cols: int) -> int:
        return dma_cycles(out_rows * self.ow * cols * self.esize, self.cfg)

    # ---- the tiles of an axis, as runs -------------------------------------------------------------
    def row_runs(self, rows: int) -> list[tuple[int, int, int]]:
        key = ("r", rows)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = _row_tiles(self, min(rows, self.rows))
        return hit

    def col_runs(self, cols: int) -> list[tuple[int, int]]:
        return _runs(self.cout, min(cols, self.cout))

    def depth_runs(self, depth: int) -> list[tuple[int, int]]:
        return _runs(self.cin, min(depth, self.cin)) if self.dense else [(1, self.cin)]


_LAYERS: dict[tuple, Layer] = {}


def layer_of(desc: OpDesc, config: NPUConfig) -> Layer:
    key = (signature(desc), config)
    hit = _LAYERS.get(key)
    if hit is None:
        if len(_LAYERS) > 4096:
            _LAYERS.clear()
        hit = _LAYERS[key] = Layer(desc, config)
    return hit


def _row_tiles(layer: Layer, rows: int) -> list[tuple[int, int, int]]:
    """Row tiles as runs (count, output rows, real input rows moved), in loop order."""
    total = layer.rows
    out: list[list] = []
    for r0 in range(0, total, rows):
        r1 = min(r0 + rows, total)
        if layer.geo is None:
            in_rows = r1 - r0
        else:
            h, _w, sh, kh, dh, pt = layer.geo
            lo, hi = r0 * sh, (r1 - 1) * sh + (kh - 1) * dh + 1  # padded input rows the tile reads
            in_rows = max(0, min(hi, pt + h) - max(lo, pt))
        if out and out[-1][1] == r1 - r0 and out[-1][2] == in_rows:
            out[-1][0] += 1
        else:
            out.append([1, r1 - r0, in_rows])
    return [(n, o, i) for n, o, i in out]


def _runs(total: int, tile: int) -> list[tuple[int, int]]:
    """Tiles of an axis as runs (count, size): the full tiles, then the edge tile."""
    full, edge = divmod(total, tile)
    return ([(full, tile)] if full else []) + ([(1, edge)] if edge else [])


# ---- the steps of a plan: a block is a list of items, a step (lc, cc, sc) or a repetition (count, block)

def _chunks(c: Layer, depth: int, out_rows: int, in_rows: int, cols: int, first_extra: int, weights: bool,
            inputs: bool, tail: tuple[int, int, int] | None) -> list:
    """The K-chunk steps of one (row tile, column tile): each loads its input chunk (`inputs`) and
    weight chunk (`weights`), the first also `first_extra`; `tail` (loads, computes, stores) joins
    the last."""
    chunks = c.depth_runs(depth)

    def step(d: int, extra: int) -> tuple:
        lc = extra + (c.x_load(in_rows, d, cols) if inputs else 0) + (c.w_load(d, cols) if weights else 0)
        return lc, c.mac(out_rows, d, cols), 0

    n_chunks = sum(n for n, _ in chunks)
    d0 = chunks[0][1]
    items: list = [step(d0, first_extra)]
    if n_chunks > 1:
        if n_chunks > 2:
            items.append((n_chunks - 2, [step(d0, 0)]))
        items.append(step(chunks[-1][1], 0))
    if tail is not None:
        lc, cc, sc = items[-1]
        items[-1] = (lc + tail[0], cc + tail[1], sc + tail[2])
    return items


def _blocks(layer: Layer, plan: MacPlan) -> list:
    """The steps the lowering emits for `plan`, as nested repetitions (see the module docstring)."""
    c = layer
    rows_runs = layer.row_runs(plan.rows)
    col_runs = layer.col_runs(plan.cols)
    one_chunk = not layer.dense or plan.depth >= layer.cin
    K = layer.cin
    body: list = []
    if plan.order == INPUTS_RESIDENT and layer.dense:
        sep = layer.bias or layer.table  # the bias / table loads start a step of their own before the epilogue

        def col_tile(out_rows: int, in_rows: int, cols: int, first: bool) -> list:
            epi = (0, c.epilogue(out_rows, cols), c.store(out_rows, cols))
            x_extra = c.x_load(in_rows, K, cols) if one_chunk and first else 0  # the input: once per row tile
            items = _chunks(c, plan.depth, out_rows, in_rows, cols, x_extra, True, not one_chunk,
                            None if sep else epi)
            if sep:
                items.append((c.chan_loads(cols), epi[1], epi[2]))
            return items

        def row_tile(out_rows: int, in_rows: int) -> list:
            items: list = []
            first = True
            for n, cols in col_runs:
                items += col_tile(out_rows, in_rows, cols, first)
                if n - 1:
                    items.append((n - 1, col_tile(out_rows, in_rows, cols, False)))
                first = False
            return items

        for n, out_rows, in_rows in rows_runs:
            body.append((n, row_tile(out_rows, in_rows)))
    else:  # weights resident (and every depthwise / grouped plan)
        def row_tile_wr(out_rows: int, in_rows: int, cols: int, first: bool) -> list:
            # bias / table (and whole-K weights) once per column tile, with its first row tile
            extra = (c.chan_loads(cols) + (c.w_load(K, cols) if one_chunk else 0)) if first else 0
            tail = (0, c.epilogue(out_rows, cols), c.store(out_rows, cols))
            return _chunks(c, plan.depth, out_rows, in_rows, cols, extra, not one_chunk, True, tail)

        def col_tile_wr(cols: int) -> list:
            items: list = []
            first = True
            for n, out_rows, in_rows in rows_runs:
                items += row_tile_wr(out_rows, in_rows, cols, first)
                if n - 1:
                    items.append((n - 1, row_tile_wr(out_rows, in_rows, cols, False)))
                first = False
            return items

        body = [(n, col_tile_wr(cols)) for n, cols in col_runs]
    return [(layer.n, body)] if layer.n > 1 else body


def _touches(items: list) -> tuple[bool, bool]:
    """(any step loads, any step stores) of a block."""
    loads = stores = False
    for it in items:
        if len(it) == 3:
            loads, stores = loads or it[0] > 0, stores or it[2] > 0
        else:
            a, b = _touches(it[1])
            loads, stores = loads or a, stores or b
    return loads, stores


def _run(clock: PipelineClock, items: list, extra: list[int]) -> None:
    """Advances the clock over a block; `extra`: load cycles the very first step carries (consumed).
    A repetition is simulated until one repetition moved every time the block reads or writes by the
    same amount: the recurrence is shift-invariant (max and +), so every later repetition does the
    same, and the rest are added at once (times of a queue the block never uses are neither read nor
    written by it)."""
    for it in items:
        if len(it) == 3:
            lc, cc, sc = it
            if extra[0]:
                lc += extra[0]
                extra[0] = 0
            clock.step(lc, cc, sc, lc > 0, sc > 0)
            continue
        n, block = it
        loads, stores = _touches(block)
        done = 0
        while done < n:
            before = clock.state()
            _run(clock, block, extra)
            done += 1
            d = _uniform_shift(before, clock.state(), loads, stores)
            if d is not None:
                clock.shift(d * (n - done), loads, stores)
                break


def _uniform_shift(a: tuple, b: tuple, loads: bool, stores: bool) -> int | None:
    """The one amount every time of state `a` that a block using loads / stores touches moved by to
    give `b` (None if they moved differently, or too few steps have run to tell)."""
    d = b[1] - a[1]
    if loads and (a[3] is None or b[0] - a[0] != d or any(y - x != d for x, y in zip(a[3], b[3]))):
        return None
    if stores and (a[4] is None or b[2] - a[2] != d or any(y - x != d for x, y in zip(a[4], b[4]))):
        return None
    return d


def steps(layer: Layer, plan: MacPlan) -> int:
    """How many tile steps the plan's program has (each a few instructions)."""
    nr = sum(r[0] for r in layer.row_runs(plan.rows))
    nc = sum(c[0] for c in layer.col_runs(plan.cols))
    chunks = sum(n for n, _ in layer.depth_runs(plan.depth))
    sep = plan.order == INPUTS_RESIDENT and layer.dense and (layer.bias or layer.table)
    return layer.n * nr * nc * (chunks + sep)


def estimate(desc: OpDesc, plan: MacPlan, config: NPUConfig, layer: Layer | None = None) -> int:
    """Predicted cycles of `desc` lowered with `plan` (what perf_model.pipeline_cycles says of the
    lowered steps), computed from the loop structure without lowering or scheduling anything."""
    layer = layer or layer_of(desc, config)
    clock = PipelineClock(config, plan.double_buffer)
    _run(clock, _blocks(layer, plan), [layer.const_lc])
    return clock.end()


# ---- the bound: per-queue totals in closed form over the runs of each axis --------------------------
# Per-axis sums are memoised on the layer (keys: the axis values they depend on), so a plan's bound is a
# few dictionary look-ups: the whole plan space can be ranked by it.

def _rows_sums(layer: Layer, rows: int) -> tuple:
    rr = layer.row_runs(rows)
    return rr, sum(r[0] for r in rr), rr[0][2]


def _cols_sums(layer: Layer, cols: int) -> tuple:
    cr = layer.col_runs(cols)
    return (cr, sum(c[0] for c in cr), sum(n * layer.chan_loads(cw) for n, cw in cr), layer.chan_loads(cr[0][1]),
            sum(n * layer.w_load(1, cw) for n, cw in cr), cr[0][1])


def _tile_sums(layer: Layer, rows: int, cols: int) -> tuple:
    """Over every (row tile, column tile): MAC + epilogue cycles (a tile's MAC cycles are linear in its
    K, so its chunks add up to one whole-K instruction), store cycles, the last tile's epilogue and
    store, the MAC cycles alone; and (depthwise / grouped) the input loads and the first one."""
    rr, cr = layer.row_runs(rows), layer.col_runs(cols)
    macs = sum(nr * nc * layer.mac(o, layer.cin, cw) for nr, o, _i in rr for nc, cw in cr)
    epi = sum(nr * nc * layer.epilogue(o, cw) for nr, o, _i in rr for nc, cw in cr)
    st = sum(nr * nc * layer.store(o, cw) for nr, o, _i in rr for nc, cw in cr)
    xc = 0 if layer.dense else sum(nr * nc * layer.x_load(i, 0, cw) for nr, _o, i in rr for nc, cw in cr)
    return (macs + epi, st, layer.epilogue(rr[-1][1], cr[-1][1]), layer.store(rr[-1][1], cr[-1][1]), macs, xc,
            layer.x_load(rr[0][2], 0, cr[0][1]))


def _depth_sums(layer: Layer, depth: int) -> tuple:
    dr = layer.depth_runs(depth)
    return dr, len(dr) == 1 and dr[0][0] == 1, dr[0][1], dr[-1][1], sum(n for n, _ in dr)


def _rows_depth_sums(layer: Layer, rows: int, depth: int) -> tuple:
    """Input loads of every (row tile, chunk), the first one's, and those of the chunks at even
    positions of an odd number of chunks (the first, ..., the last)."""
    rr, (dr, _one, d0, dL, D) = layer.row_runs(rows), _depth_sums(layer, depth)
    xs = sum(na * nb * layer.x_load(i, d, 0) for na, _o, i in rr for nb, d in dr)
    even = sum(na * ((D - 1) // 2 * layer.x_load(i, d0, 0) + layer.x_load(i, dL, 0)) for na, _o, i in rr)
    return xs, layer.x_load(rr[0][2], d0, 0), even


def _cols_depth_sums(layer: Layer, cols: int, depth: int) -> tuple:
    """Weight loads of every (column tile, chunk), the first one's, and the even chunks' (as above)."""
    cr, (dr, _one, d0, dL, D) = layer.col_runs(cols), _depth_sums(layer, depth)
    ws = sum(na * nb * layer.w_load(d, cw) for na, cw in cr for nb, d in dr)
    even = sum(na * ((D - 1) // 2 * layer.w_load(d0, cw) + layer.w_load(dL, cw)) for na, cw in cr)
    return ws, layer.w_load(d0, cr[0][1]), even


def _memo(layer: Layer, key: tuple, build, *args):
    memo = layer.memo
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = build(layer, *args)
    return hit


def bounds(layer: Layer, rows: int, cols: int, depth: int, double_buffer: bool = True) -> tuple[int, int]:
    """lower_bound of the plan (rows, cols, depth) of `layer` in the weights-resident and the
    inputs-resident order (the latter as the former where the layer has only that order)."""
    _rr, nrows, _i0 = _memo(layer, ("R", rows), _rows_sums, rows)
    _cr, ncols, chan, chan0, w1, _cw0 = _memo(layer, ("C", cols), _cols_sums, cols)
    comp, st, epi_last, st_last, macs, xc, xc0 = _memo(layer, ("RC", rows, cols), _tile_sums, rows, cols)
    n, const = layer.n, layer.const_lc
    ctl = layer.cfg.control_cycles
    if not layer.dense:
        loads, first = n * (xc + w1 + chan) + const, xc0 + layer.w_load(1, _cw0) + chan0 + const
        b = _combine(loads, n * comp, n * st, first, epi_last, st_last, 0, double_buffer) + ctl
        return b, b
    _dr, one_chunk, d0, dL, D = _memo(layer, ("D", depth), _depth_sums, depth)
    xs, x0, x_even = _memo(layer, ("RD", rows, depth), _rows_depth_sums, rows, depth)
    ws, w0, w_even = _memo(layer, ("CD", cols, depth), _cols_depth_sums, cols, depth)
    comp, st = n * comp, n * st
    wr_loads = n * (ncols * xs + (ws if one_chunk else nrows * ws) + chan) + const
    ir_loads = n * ((xs if one_chunk else ncols * xs) + nrows * (ws + chan)) + const
    chain = 0
    if D % 2 and (layer.bias or layer.table):
        half = (D - 1) // 2
        chain = n * ((xs if one_chunk else ncols * x_even) + nrows * w_even + macs // layer.cin * (half * d0 + dL))
    first = x0 + w0 + const
    return (_combine(wr_loads, comp, st, first + chan0, epi_last, st_last, 0, double_buffer) + ctl,
            _combine(ir_loads, comp, st, first, epi_last, st_last, chain, double_buffer) + ctl)


def _combine(loads: int, comp: int, st: int, first: int, epi_last: int, st_last: int, chain: int,
             double_buffer: bool) -> int:
    serial = chain + epi_last if double_buffer else loads + comp
    return max(loads + epi_last + st_last, first + comp + st_last, first + st, serial + st_last)


def lower_bound(desc: OpDesc, plan: MacPlan, config: NPUConfig, layer: Layer | None = None) -> int:
    """A bound the estimate never goes below. Each queue runs its instructions one after another: the
    loads all, then the last step's epilogue and store; the first step's loads, then every compute,
    then the last store; the first loads, then every store (plus the closing barrier). A step's loads
    wait for the compute of the step that last used their slot (two load steps back, one without
    double buffering): single-buffered, every step's loads and computes are serial; double-buffered
    inputs-resident plans with an odd number of K chunks and an epilogue step per column tile load
    the chunks at even positions into the same slot, so their loads and computes are serial."""
    b = bounds(layer or layer_of(desc, config), plan.rows, plan.cols, plan.depth, plan.double_buffer)
    return b[1] if plan.order == INPUTS_RESIDENT else b[0]
