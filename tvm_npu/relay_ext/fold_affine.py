"""Per-channel affine chains after a convolution folded into its weights and bias.

Models often scale and shift a convolution's output by constants before anything nonlinear: the
bias add itself, PP-LCNetV3's "learnable affine blocks" (x * s + b with scalar s and b after every
convolution), a batch norm that TVM decomposed into a multiply and an add instead of folding it.
Each of those is a full pass over the feature map on the NPU's vector unit (DRAM in, DRAM out) and one
more fp16 rounding. Since

    (conv(x, W) + b) * s + c  ==  conv(x, W * s[o]) + (b * s + c)

for constants s and c that vary only along the output channels, `FoldAffineIntoConv` rewrites such a
chain (add / subtract / multiply / divide by constants, each intermediate used only by the next) into
one convolution with scaled weights and one bias add, which the pattern table fuses into one NPU
operator. Float graphs only (quantised graphs carry their scales in dequantize / quantize).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Optional

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

__all__ = ["FoldAffineIntoConv", "FoldInputAffineIntoConv", "affine_chains", "input_affine_chains"]

_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")
_OPS = {tvm.ir.Op.get(f"relax.{n}"): n for n in ("add", "subtract", "multiply", "divide")}


@dataclasses.dataclass
class _Chain:
    conv: relax.Call  # the original convolution
    weight: np.ndarray
    scale: np.ndarray  # per output channel (C,)
    shift: np.ndarray  # per output channel (C,)
    channel_axis: int  # of the convolution's output
    ops: int  # affine operations folded (the bias add counts)
    scaled: bool  # a multiply or divide is among them


def _static_shape(ty) -> Optional[List[int]]:
    try:
        return [int(v) for v in ty.shape.values]
    except (AttributeError, TypeError):
        return None


def _uses(fn: relax.Function) -> Dict[relax.Var, int]:
    """How often each variable is read in `fn` (call arguments, tuples, the function's result)."""
    count: Dict[relax.Var, int] = {}

    def visit(e):
        if isinstance(e, relax.Var):
            count[e] = count.get(e, 0) + 1
        elif isinstance(e, relax.Call):
            for a in e.args:
                visit(a)
        elif isinstance(e, relax.Tuple):
            for f in e.fields:
                visit(f)
        elif isinstance(e, relax.TupleGetItem):
            visit(e.tuple_value)

    for block in fn.body.blocks:
        for b in block.bindings:
            visit(b.value)
    visit(fn.body.body)
    return count


def _op_calls(fn: relax.Function):
    """(variable, call) of every binding of `fn` whose value calls a Relax operator, in order."""
    for block in fn.body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op):
                yield b.var, b.value


def _channel_vector(value: np.ndarray, out_shape: List[int], axis: int) -> Optional[np.ndarray]:
    """A constant operand as a per-channel vector (C,), if it broadcasts along the channel axis only."""
    c = out_shape[axis]
    shape = list(value.shape)
    if len(shape) > len(out_shape):
        return None
    shape = [1] * (len(out_shape) - len(shape)) + shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, c):
        return None
    return np.broadcast_to(value.reshape(-1), (c,)).astype(np.float64)


def _step(name: str, scale, shift, k):
    """(scale, shift) of x * scale + shift after one more `name` by the constant k."""
    if name == "add":
        return scale, shift + k
    if name == "subtract":
        return scale, shift - k
    if name == "multiply":
        return scale * k, shift * k
    return scale / k, shift / k


def affine_chains(fn: relax.Function, const_value) -> Dict[relax.Call, _Chain]:
    """{the call that ends a foldable chain: the chain}, in `fn` as it is. `const_value(expr)` gives
    a constant expression's numpy value or None (rewrites._const_value)."""
    uses = _uses(fn)
    live: Dict[relax.Var, _Chain] = {}  # vars holding conv(x) * scale + shift
    ends: Dict[relax.Var, relax.Call] = {}
    for v, call in _op_calls(fn):
        if call.op.same_as(_CONV2D):
            out = _static_shape(call.ty)
            w = const_value(call.args[1])
            if out is None or w is None or not str(call.ty.dtype).startswith("float") or \
                    not str(w.dtype).startswith("float"):
                continue
            axis = str(call.attrs.out_layout or call.attrs.data_layout).find("C")
            if axis < 0:
                continue
            c = out[axis]
            live[v] = _Chain(call, w, np.ones(c), np.zeros(c), axis, 0, False)
            continue
        name = _OPS.get(call.op)
        if name is None or len(call.args) != 2:
            continue
        x, y = call.args
        if name in ("add", "multiply") and y in live and x not in live:
            x, y = y, x  # constant first is the same for the commutative ones
        if not (isinstance(x, relax.Var) and x in live and uses.get(x, 0) == 1):
            continue
        k = const_value(y)
        chain = live[x]
        out = _static_shape(chain.conv.ty)
        vec = None if k is None else _channel_vector(np.asarray(k), out, chain.channel_axis)
        if vec is None or (name == "divide" and np.any(vec == 0)) or not np.all(np.isfinite(vec)):
            continue
        scale, shift = _step(name, chain.scale, chain.shift, vec)
        live[v] = dataclasses.replace(chain, scale=scale, shift=shift, ops=chain.ops + 1,
                                      scaled=chain.scaled or name in ("multiply", "divide"))
        ends.pop(x, None)
        ends[v] = call
    # worth a rewrite: anything beyond one bias add (that one the patterns fuse already)
    return {call: live[v] for v, call in ends.items() if live[v].scaled or live[v].ops > 1}


@mutator
class _ChainRewriter(PyExprMutator):
    """Rewrites the calls `analyse(fn, const_value)` maps to chains, by `rewrite(self, call, chain)`."""

    def __init__(self, mod: tvm.IRModule, analyse=None, rewrite=None):
        super().__init__(mod)
        self.changed = False
        self.analyse, self.rewrite = analyse, rewrite
        self.chains: dict = {}

    def visit_function_(self, fn):
        from .rewrites import _const_value

        lookup = {}
        for block in fn.body.blocks:
            for b in block.bindings:
                lookup[b.var] = b.value
        self.chains = self.analyse(fn, lambda e: _const_value(e, lookup.get))
        return super().visit_function_(fn)

    def visit_call_(self, call):
        chain = self.chains.get(call)
        if chain is None:
            return super().visit_call_(call)
        self.changed = True
        return self.rewrite(self, call, chain)


def _conv_plus_bias(rw: _ChainRewriter, conv: relax.Call, data: relax.Expr, weight: np.ndarray,
                    bias: np.ndarray) -> relax.Expr:
    """conv2d(data, weight) with `conv`'s attributes, plus the per-output-channel `bias`."""
    a = conv.attrs
    dtype = str(conv.ty.dtype)
    new_conv = rw.builder_.emit(relax.op.nn.conv2d(
        rw.visit_expr(data), relax.const(weight, str(weight.dtype)), strides=a.strides, padding=a.padding,
        dilation=a.dilation, groups=int(a.groups), data_layout=str(a.data_layout),
        kernel_layout=str(a.kernel_layout), out_layout=str(a.out_layout),
        out_dtype=str(a.out_dtype) if a.out_dtype is not None and str(a.out_dtype) else None))
    bshape = [1] * len(_static_shape(conv.ty))
    bshape[str(a.out_layout or a.data_layout).find("C")] = -1
    return relax.op.add(new_conv, relax.const(bias.reshape(bshape).astype(dtype), dtype))


def _along(vec: np.ndarray, weight: np.ndarray, conv: relax.Call, axis: str) -> np.ndarray:
    """`vec` shaped to broadcast along the kernel axis `axis` ("O" or "I") of `weight`."""
    shape = [1] * weight.ndim
    shape[str(conv.attrs.kernel_layout).find(axis)] = -1
    return vec.reshape(shape)


def _rewrite_output_chain(rw: _ChainRewriter, call: relax.Call, chain: _Chain) -> relax.Expr:
    weight = (chain.weight.astype(np.float64) * _along(chain.scale, chain.weight, chain.conv, "O"))
    return _conv_plus_bias(rw, chain.conv, chain.conv.args[0], weight.astype(chain.weight.dtype), chain.shift)


# ---- the other side: a constant scale / shift feeding an unpadded convolution --------------------------

@dataclasses.dataclass
class _InputChain:
    source: relax.Expr  # what the chain scales and shifts
    scale: np.ndarray  # broadcastable against the source (right-aligned); per input channel at a conv
    shift: np.ndarray
    weight: Optional[np.ndarray] = None  # the convolution's (at a conv)


def input_affine_chains(fn: relax.Function, const_value) -> Dict[relax.Call, _InputChain]:
    """{an unpadded, ungrouped float convolution: the chain x * s + b feeding it}, for chains whose
    every step is used only by the next and whose constants vary only along the convolution's input
    channels. Since no tap reads padding, conv(x * s + b, W) == conv(x, W * s[i]) + sum(W * b[i])."""
    uses = _uses(fn)
    pre: Dict[relax.Var, _InputChain] = {}
    out: Dict[relax.Call, _InputChain] = {}
    for v, call in _op_calls(fn):
        if call.op.same_as(_CONV2D):
            x = call.args[0]
            chain = pre.get(x) if isinstance(x, relax.Var) and uses.get(x, 0) == 1 else None
            w = const_value(call.args[1])
            a = call.attrs
            if chain is None or w is None or not str(w.dtype).startswith("float") or int(a.groups) != 1 or \
                    any(int(p) for p in a.padding):
                continue
            shape = _static_shape(x.ty)
            axis = str(a.data_layout).find("C")
            if shape is None or axis < 0:
                continue
            s_vec = _channel_vector(chain.scale, shape, axis)
            b_vec = _channel_vector(chain.shift, shape, axis)
            if s_vec is not None and b_vec is not None:
                out[call] = _InputChain(chain.source, s_vec, b_vec, w)
            continue
        name = _OPS.get(call.op)
        if name is None or len(call.args) != 2:
            continue
        x, y = call.args
        k = const_value(y)
        if k is None and name in ("add", "multiply"):
            x, y = y, x
            k = const_value(y)
        if k is None or not isinstance(x, relax.Var) or const_value(x) is not None or \
                not str(getattr(call.ty, "dtype", "")).startswith("float"):
            continue
        k = np.asarray(k, dtype=np.float64)
        if (name == "divide" and np.any(k == 0)) or not np.all(np.isfinite(k)):
            continue
        base = pre.get(x) if uses.get(x, 0) == 1 else None
        if base is None and name != "multiply":
            # a chain starts at a scale: an add / divide by a constant is often a part of an
            # activation (hard-swish's x + 3 and / 6) that the pattern table fuses whole
            continue
        chain = base or _InputChain(x, np.ones(()), np.zeros(()))
        pre[v] = _InputChain(chain.source, *_step(name, chain.scale, chain.shift, k))
    return out


def _rewrite_input_chain(rw: _ChainRewriter, call: relax.Call, chain: _InputChain) -> relax.Expr:
    w64 = chain.weight.astype(np.float64)
    weight = (w64 * _along(chain.scale, w64, call, "I")).astype(chain.weight.dtype)
    o = str(call.attrs.kernel_layout).find("O")
    bias = (w64 * _along(chain.shift, w64, call, "I")).sum(axis=tuple(d for d in range(w64.ndim) if d != o))
    return _conv_plus_bias(rw, call, chain.source, weight, bias)


def FoldInputAffineIntoConv() -> tvm.transform.Pass:
    """Folds constant per-channel scale / shift chains that feed an unpadded, ungrouped float
    convolution into its weights and a bias (see input_affine_chains)."""
    from .rewrites import _mutator_pass

    return _mutator_pass(functools.partial(_ChainRewriter, analyse=input_affine_chains,
                                           rewrite=_rewrite_input_chain), "FoldInputAffineIntoConv")


def FoldAffineIntoConv() -> tvm.transform.Pass:
    """Folds constant per-channel scale / shift chains after float convolutions into their weights
    and bias (see the module docstring)."""
    from .rewrites import _mutator_pass

    return _mutator_pass(functools.partial(_ChainRewriter, analyse=affine_chains, rewrite=_rewrite_output_chain),
                         "FoldAffineIntoConv")
