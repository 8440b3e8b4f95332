"""The fast paths of the lowering toolkit against the straightforward definitions they replace: the
memoised `emit.at` and `DramTensor.view`, the token pipeline, the walker's generated block regions,
the cycle model's operand access."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tvm_npu
from tvm_npu.ir import OpDesc, TensorDesc
from tvm_npu.ir import plan as P
from tvm_npu.isa import Dep, DramRef, DType, Instr, ISAError, Program, Queue, Region, Space, TensorRef
from tvm_npu.lowering.emit import at
from tvm_npu.lowering.memory import DramTensor
from tvm_npu.lowering.pipeline import Step, emit_pipeline
from tvm_npu.perf_model import instr_cycles, pipeline_cycles
from tvm_npu.tir_schedules import Walker, schedule
from tvm_npu.tir_schedules import walker as W
from tvm_npu.tir_schedules.vector import elementwise_schedule


# ---- emit.at, DramTensor.view ---------------------------------------------------------------------

def test_at_is_the_same_buffer_with_other_dims():
    t = TensorRef(Space.ACC, DType.FP32, 0x40, (1, 4, 8, 16))
    for shape in [(1, 2, 8, 16), [1, 1, 1, 3], (np.int64(1), 2, 3, 4), (1.0, 2, 3, 4)]:
        got = at(t, shape)
        assert got == TensorRef(t.space, t.dtype, t.addr, tuple(shape))
        assert all(type(d) is int for d in got.shape)
        assert at(t, shape) is got  # tiles repeat: one object
    assert at(t, (1, 2, 8, 16)) is not at(dataclasses.replace(t, addr=0x80), (1, 2, 8, 16))
    assert at(t, (1, 2, 8, 16)) != at(dataclasses.replace(t, dtype=DType.INT32), (1, 2, 8, 16))
    with pytest.raises(ISAError, match="4 dims"):
        at(t, (1, 2, 3))


def _reference_strides(shape, itemsize):
    out, acc = [], itemsize
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


@settings(max_examples=300)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=5), st.sampled_from(list(DType)),
       st.sampled_from(list(Region)), st.integers(0, 4096), st.data())
def test_view_is_the_strided_descriptor(shape, dtype, region, offset, data):
    t = DramTensor(region, offset, tuple(shape), dtype)
    strides = _reference_strides(shape, t.itemsize)
    assert t.strides == strides
    axes = data.draw(st.lists(st.one_of(st.none(), st.integers(0, len(shape) - 1)), min_size=4, max_size=4))
    start = data.draw(st.dictionaries(st.integers(0, len(shape) - 1), st.integers(0, 8)))
    want = DramRef(region, offset + sum(strides[a] * i for a, i in start.items()),
                   tuple(0 if a is None else strides[a] for a in axes))
    got = t.view(tuple(axes), dict(start))
    assert got == want and type(got.addr) is int
    assert t.view(tuple(axes), dict(start)) is got
    assert t.view(axes) == DramRef(region, offset, want.strides)


def test_view_keeps_refusing_what_dram_ref_refuses():
    t = DramTensor(Region.IO, 0, (2, 3), DType.FP16)
    with pytest.raises(ISAError, match="4 entries"):
        t.view((0, 1))
    with pytest.raises(IndexError):
        t.view((None, None, 0, 5))


def test_dram_tensor_equality_ignores_the_memo():
    a, b = DramTensor(Region.IO, 0, (2, 3), DType.FP16), DramTensor(Region.IO, 0, (2, 3), DType.FP16)
    a.view((None, None, 0, 1))
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)


# ---- the token pipeline ---------------------------------------------------------------------------

def _reference_emit_pipeline(program, steps, double_buffer=True):
    """emit_pipeline as first written (dataclasses.replace, ranks by dict)."""
    def with_(instr, flags):
        return dataclasses.replace(instr, deps=instr.deps | flags)

    reuse = 2 if double_buffer else 1
    load_steps = [i for i, s in enumerate(steps) if s.loads]
    store_steps = [i for i, s in enumerate(steps) if s.stores]
    load_rank = {i: r for r, i in enumerate(load_steps)}
    store_rank = {i: r for r, i in enumerate(store_steps)}
    for i, step in enumerate(steps):
        if not step.computes and (step.loads or step.stores):
            step.computes = [Instr.make("sync", queue=int(Queue.COMPUTE))]
        loads, computes, stores = list(step.loads), list(step.computes), list(step.stores)
        first_c, last_c = Dep.NONE, Dep.NONE
        if loads:
            r = load_rank[i]
            if r >= reuse:
                loads[0] = with_(loads[0], Dep.POP_NEXT)
            loads[-1] = with_(loads[-1], Dep.PUSH_NEXT)
            first_c |= Dep.POP_PREV
            if r + reuse < len(load_steps):
                last_c |= Dep.PUSH_PREV
        if stores:
            r = store_rank[i]
            if r >= reuse:
                first_c |= Dep.POP_NEXT
            last_c |= Dep.PUSH_NEXT
            stores[0] = with_(stores[0], Dep.POP_PREV)
            if r + reuse < len(store_steps):
                stores[-1] = with_(stores[-1], Dep.PUSH_PREV)
        computes[0] = with_(computes[0], first_c)
        computes[-1] = with_(computes[-1], last_c)
        for ins in loads + computes + stores:
            program.append(ins)


_T = TensorRef(Space.ACT, DType.FP16, 0, (1, 1, 4, 16))
_LOAD = Instr.make("dma.load", dst=_T, src=DramRef(Region.IO, 0, (0, 0, 32, 2)))
_STORE = Instr.make("dma.store", src=_T, dst=DramRef(Region.IO, 64, (0, 0, 32, 2)))
_COMPUTE = Instr.make("vcvt", a=_T, o=_T)


@st.composite
def step_lists(draw):
    steps = []
    for _ in range(draw(st.integers(1, 9))):
        n_l, n_c, n_s = draw(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)))
        if n_l + n_c + n_s == 0:
            n_c = 1
        deps = st.integers(0, 15).map(Dep)
        steps.append(([_LOAD.with_deps(draw(deps)) for _ in range(n_l)],
                      [_COMPUTE.with_deps(draw(deps)) for _ in range(n_c)],
                      [_STORE.with_deps(draw(deps)) for _ in range(n_s)]))
    return steps


@settings(max_examples=300)
@given(step_lists(), st.booleans())
def test_emit_pipeline_equals_the_reference(spec_, double_buffer):
    got, want = Program(), Program()
    emit_pipeline(got, [Step(*map(list, s)) for s in spec_], double_buffer)
    _reference_emit_pipeline(want, [Step(*map(list, s)) for s in spec_], double_buffer)
    assert got == want
    assert [type(i.deps) for i in got] == [Dep] * len(got)
    assert got.encode() == want.encode()


@settings(max_examples=100)
@given(step_lists(), st.booleans())
def test_pipeline_cycles_reads_operands_as_before(spec_, double_buffer):
    cfg = tvm_npu.get_config("npu-edge")
    steps = [Step(*map(list, s)) for s in spec_]

    def reference_cycles(ins):  # the DMA and vector rules, through Instr.__getitem__
        u = ins.opcode.unit.name
        if u.startswith("DMA"):
            t = ins["dst"] if u == "DMA_LOAD" else ins["src"]
            n, h, w, c = t.shape
            if u == "DMA_LOAD":
                h -= ins["pad_top"] + ins["pad_bottom"]
                w -= ins["pad_left"] + ins["pad_right"]
            return cfg.dma_setup_cycles + math.ceil(n * h * w * c * 2 / cfg.dma_bytes_per_cycle)
        return math.ceil(math.prod(ins["o"].shape) / cfg.vector_lanes) + cfg.vector_issue_cycles

    for s in steps:
        for ins in itertools.chain(s.loads, s.computes, s.stores):
            assert instr_cycles(ins, cfg) == reference_cycles(ins)
    assert pipeline_cycles(steps, cfg, double_buffer) > 0


# ---- the walker's generated regions ---------------------------------------------------------------

def _reference_box(walker, leaf, env):
    """_Block.box as first written: every binding compiled alone, evaluated with the element loops
    at 0 and at extent - 1, clamped to the iteration variable's domain."""
    realize = leaf.realize
    lo_env, hi_env = dict(env), dict(env)
    for name, ext in leaf.elem:
        lo_env[name], hi_env[name] = 0, ext - 1
    out = {}
    for iv, val in zip(realize.block.iter_vars, realize.iter_values):
        fn, _ = W.compile_expr(val)
        lo_d = int(iv.dom.min)
        out[iv.var.name] = (max(fn(lo_env), lo_d), min(fn(hi_env), lo_d + int(iv.dom.extent) - 1))
    return out


def _tiles(nodes, env):
    """(leaf, env) for every leaf block at every tile of the loop nest, as Walker._walk visits them."""
    for n in nodes:
        if isinstance(n, W._Loop):
            for i in range(n.extent):
                yield from _tiles(n.body, {**env, n.var: i})
        else:
            yield n, env


def _conv_schedule(stride, pad, plan):
    x, w = (1, 5, 11, 9), np.ones((20, 5, 3, 3), np.float32)
    oh = (x[2] + pad[0] + pad[2] - 3) // stride + 1
    ow = (x[3] + pad[1] + pad[3] - 3) // stride + 1
    desc = OpDesc("npu.conv2d", "conv2d", [TensorDesc(x, "float32"), TensorDesc(w.shape, "float32", w)],
                  TensorDesc((1, 20, oh, ow), "float32"),
                  {"strides": (stride, stride), "padding": pad, "dilation": (1, 1), "groups": 1,
                   "data_layout": "NCHW", "kernel_layout": "OIHW"})
    kernel, sch = schedule(desc, plan)
    return sch.mod["main"], kernel.valid


def _binary_schedule(shapes, out_shape, rows, cols):
    desc = OpDesc("npu.add", "binary", [TensorDesc(s, "float16") for s in shapes], TensorDesc(out_shape, "float16"),
                  {"op": "add"})
    sch, valid = elementwise_schedule(desc, shapes, ["float16"] * len(shapes), out_shape, rows, cols)
    return sch.mod["main"], valid


SCHEDULES = {
    "conv_s2_pad": lambda: _conv_schedule(2, (1, 1, 1, 1), P.Plan(rows=4, cols=16, depth=5)),
    "conv_s1_edge": lambda: _conv_schedule(1, (0, 1, 2, 0), P.Plan(rows=3, cols=8, depth=2)),
    "add_broadcast": lambda: _binary_schedule([(1, 7, 10, 6), (1, 1, 10, 1)], (1, 7, 10, 6), 3, 4),
}


def _sram_side(leaf):
    """(SRAM index variable names, SRAM buffer name) of a copy or compute block."""
    store = leaf.realize.block.body
    if leaf.kind == "store":  # NPU scope -> DRAM: the value reads SRAM
        value = store.value
        if type(value).__name__ == "Call":  # if_then_else(cond, load, pad)
            value = value.args[1]
        return [i.name for i in value.indices], value.source.name
    return [i.name for i in store.indices], store.buffer.name


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_block_regions_equal_the_reference_box(name):
    func, valid = SCHEDULES[name]()
    walker = Walker(func, valid)
    seen = set()
    for leaf, env in _tiles(walker.tree, {}):
        blk = leaf.prepared[0]
        ref = _reference_box(walker, leaf, env)
        assert blk.box(env) == ref
        if leaf.kind in ("load", "store", "compute"):
            names, buffer = _sram_side(leaf)
            region = leaf.prepared[2]  # the generated region of the SRAM indices, cut to the real extents
            assert region(env) == walker._clamp(buffer, [ref[v] for v in names])
        seen.add(leaf.kind)
    assert {"load", "store"} <= seen


def test_dram_index_of_one_variable_equals_compile_expr():
    import tvm
    from tvm import tirx
    v = tirx.Var("v0", "int32")
    for e in [v * 2 - 3, tirx.floordiv(v + 5, 3), tirx.floormod(v, 4) + 1, tirx.max(v - 2, 0), tirx.min(v, 7),
              tirx.IntImm("int32", 4)]:
        fn, names = W.compile_expr(e)
        one = W._compile_of_one(e, "v0")
        for x in range(-6, 12):
            assert one(x) == fn({"v0": x})
