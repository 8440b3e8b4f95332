"""FoldWithNumpy: constant subexpressions folded with numpy keep TVM's shapes, dtypes and values."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm_npu.relay_ext.fold import FoldWithNumpy


def _fold(build, *consts):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 3], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(build(x, *[relax.const(c) for c in consts]))
        bb.emit_func_output(y)
    mod = bb.get()
    tidy = tvm.transform.Sequential([relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()])
    return tidy(FoldWithNumpy()(mod)), tidy(relax.transform.FoldConstant()(mod))


def _consts(mod):
    """The folded constants: bound to variables (FoldWithNumpy) or passed inline (FoldConstant)."""
    out = []
    for b in mod["main"].body.blocks[0].bindings:
        values = list(b.value.args) if isinstance(b.value, relax.Call) else [b.value]
        out += [a.value.numpy() for a in values if isinstance(a, tvm.ir.expr.Constant)]
    return out


def test_scalar_constants_stay_scalars():
    """0-d results keep rank 0 (np.ascontiguousarray would make them 1-d and break a later stack)."""
    s16 = np.array(1.5, np.float16)
    folded, ref = _fold(lambda x, s: relax.op.add(x, relax.op.astype(s, "float32")), s16)
    got, want = _consts(folded), _consts(ref)
    assert [g.shape for g in got] == [w.shape for w in want] == [()]
    np.testing.assert_array_equal(got[0], want[0])


def test_casts_and_broadcasts_match_fold_constant():
    w16 = (np.random.default_rng(1).standard_normal((3,)) * 100).astype(np.float16)
    w32 = np.random.default_rng(2).standard_normal((1, 3)).astype(np.float32) * 1e5
    folded, ref = _fold(lambda x, a, b: relax.op.multiply(
        relax.op.add(x, relax.op.broadcast_to(relax.op.astype(a, "float32"), relax.ShapeExpr([2, 3]))),
        relax.op.astype(relax.op.astype(b, "float16"), "float32")), w16, w32)
    got, want = _consts(folded), _consts(ref)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)  # float16 rounding: numpy and TVM agree bit for bit


def test_expand_dims_isnan_where_match_fold_constant():
    v = np.array([1.0, np.nan, -2.0], np.float32)
    folded, ref = _fold(lambda x, a: relax.op.add(x, relax.op.expand_dims(
        relax.op.where(relax.op.isnan(a), relax.const(np.zeros(3, np.float32)), a), axis=0)), v)
    got, want = _consts(folded), _consts(ref)
    assert len(got) == len(want) == 1 and got[0].shape == want[0].shape == (1, 3)
    np.testing.assert_array_equal(got[0], want[0])


def test_nothing_left_to_fold_skips_fold_constant():
    from tvm_npu.relay_ext.partition import _foldable

    folded, _ = _fold(lambda x, a: relax.op.add(x, relax.op.astype(a, "float32")), np.ones(3, np.float16))
    assert not _foldable(folded)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([3], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.cumsum(relax.const(np.ones(3, np.float32))))  # numpy does not fold it
            y = bb.emit_output(relax.op.add(x, c))
        bb.emit_func_output(y)
    assert _foldable(bb.get())


def test_shape_of_constant_and_take_fold_like_tvm():
    """An embedding's index wrap-around as exporters write it: x + take(shape_to_tensor(shape_of(table)),
    0) folds to the constant row count, as TVM's FoldConstant computes it, and shape_of is dropped."""
    table = np.zeros((7, 4), np.float32)

    def build(x, t):
        n = relax.op.take(relax.op.shape_to_tensor(relax.op.shape_of(t)), relax.const(0, "int64"), axis=0,
                          mode="wrap")
        return relax.op.add(x, relax.op.astype(n, "float32"))

    folded, ref = _fold(build, table)
    got, want = _consts(folded), _consts(ref)
    assert [g.tolist() for g in got] == [w.tolist() for w in want] == [7.0]
    assert "shape_of" not in folded.script() and "take" not in folded.script()
    table = np.arange(18, dtype=np.float32).reshape(6, 3)
    idx = np.array([-1, 8], np.int64)  # wrap mode: rows 5 and 2

    def build2(x, t, i):
        return relax.op.add(x, relax.op.take(t, i, axis=0, mode="wrap"))

    folded, ref = _fold(build2, table, idx)
    (got,), (want,) = _consts(folded), _consts(ref)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, table[[5, 2]])
