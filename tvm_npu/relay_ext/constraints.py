"""Can-run constraints of NPU operators. Each constraint's docstring is its rule (the supported
operator table in docs/ is generated from them); it returns None when satisfied, else the reason.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import numpy as np

from .. import tiling
from ..config import NPUConfig
from ..ir.desc import OpDesc, Unsupported
from ..ir.geometry import conv_geom
from ..ir.memory import storage_dtype
from ..ir.plan import Refusal
from ..isa import DType
from ..options import CompileOptions
from .layout import layout_dtypes, layout_params

Constraint = Callable[[OpDesc, NPUConfig, CompileOptions], Optional[str]]
FLOAT = ("float32", "float16")


def float_tensors(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """All operands and the result are float32 or float16 (run in fp16 with fp32 accumulation)."""
    for t in d.inputs + [d.output]:
        if t.dtype not in FLOAT:
            return f"dtype {t.dtype}: the float path takes float32/float16 (integer graphs need quantisation)"
    return None


FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
FP16_CONST_REL_ERROR = 1e-3  # 2x fp16's unit roundoff: normal values never lose more than 2^-11


def fp16_constants(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Constant operands stored in float16 (weights, biases) fit it: no value beyond 65504 (it would be
    inf), and float16 keeps them to within 0.1% (relative L2 error; values below 6e-8 flush to zero)."""
    for i, t in enumerate(d.inputs):
        if not t.is_const or storage_dtype(d, t) != DType.FP16 or t.const is None or t.const.size == 0:
            continue
        a = np.abs(np.asarray(t.const))
        big = float(a.max())
        if big > FP16_MAX:
            return (f"constant operand {i} has values up to {big:.4g}, beyond the float16 range ({FP16_MAX:.0f}): "
                    f"they would run as inf")
        # fp16 keeps normal values to 2^-11 relative, so the relative L2 error is at most
        # sqrt(2^-22 + (sum of the squares below the normal range) / (sum of all squares)): exact only
        # when that bound is not already below the limit (weights rarely have much below 6e-5)
        small = a[a < FP16_MIN_NORMAL]
        total = float(np.dot(a.ravel(), a.ravel()))
        if total > 0 and 2.0**-22 + float(np.dot(small, small)) / total <= FP16_CONST_REL_ERROR**2:
            continue
        v = np.asarray(t.const, dtype=np.float64)
        norm = float(np.linalg.norm(v))
        if norm > 0:
            err = float(np.linalg.norm(v.astype(np.float16).astype(np.float64) - v)) / norm
            if err > FP16_CONST_REL_ERROR:
                flushed = int(np.count_nonzero((v != 0) & (v.astype(np.float16) == 0)))
                return (f"constant operand {i} loses {err:.2%} of its values in float16 (largest |value| "
                        f"{big:.3g}; {flushed} of {v.size} become 0)")
    return None


def rank_at_most_4(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Tensors have rank 1 to 4 and no dimension above 65535 (the ISA's 16-bit tensor dims)."""
    for t in d.inputs + [d.output]:
        if t.is_const:
            continue
        if not 1 <= len(t.shape) <= 4:
            return f"rank {len(t.shape)} tensor {list(t.shape)} (1 to 4 supported)"
        if any(x > 65535 for x in t.shape):
            return f"dimension above 65535 in {list(t.shape)}"
        if math.prod(t.shape) == 0:
            return f"empty tensor {list(t.shape)}"
    return None


def conv_layout(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """conv2d data layout NCHW or NHWC (output in the same layout), kernel layout any order of O, I, H, W
    (OIHW from ONNX, OHWI / HWOI from TFLite)."""
    a = d.attrs
    if a["data_layout"] not in ("NCHW", "NHWC"):
        return f"data layout {a['data_layout']}"
    if a["out_layout"] != a["data_layout"]:
        return f"output layout {a['out_layout']} differs from data layout {a['data_layout']}"
    if sorted(a["kernel_layout"]) != sorted("OIHW"):
        return f"kernel layout {a['kernel_layout']}"
    return None


def constant_weights(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Weights (and bias) are constants known at compile time."""
    for i, t in enumerate(d.inputs[1:], 1):
        if not t.is_const:
            return f"operand {i} (weight/bias) is not a constant"
    return None


def conv_params(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Strides and dilations 1..255, padding 0..255, groups dividing both channel counts."""
    g = conv_geom(d)
    if not all(1 <= v <= 255 for v in (g.sh, g.sw, g.dh, g.dw)):
        return f"stride {g.sh, g.sw} / dilation {g.dh, g.dw} outside 1..255"
    if not all(0 <= v <= 255 for v in g.pad):
        return f"padding {g.pad} outside 0..255"
    if g.groups < 1 or g.cin % g.groups or g.cout % g.groups:
        return f"groups {g.groups} do not divide channels {g.cin} -> {g.cout}"
    w = d.inputs[1].shape
    kl = d.attrs["kernel_layout"]
    if w[kl.index("I")] != g.cg or w[kl.index("O")] != g.cout:
        return f"weight shape {list(w)} does not match {g.cin} -> {g.cout} channels in {g.groups} groups"
    if g.oh < 1 or g.ow < 1:
        return "empty output"
    return None


def bias_per_channel(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """A fused bias has one value per output channel (shape [C], or C on the channel axis, 1 elsewhere)."""
    if len(d.inputs) < 3:
        return None
    b = d.inputs[2]
    cout = d.output.shape[d.attrs["data_layout"].index("C")] if d.kind == "conv2d" else d.output.shape[-1]
    channel_axis = (len(b.shape) - 4 + d.attrs["data_layout"].index("C")) if d.kind == "conv2d" else len(b.shape) - 1
    if math.prod(b.shape) != cout:
        return f"bias {list(b.shape)} is not one value per output channel ({cout})"
    if len(b.shape) > 1 and (channel_axis < 0 or b.shape[channel_axis] != cout):
        return f"bias {list(b.shape)} does not lie along the channel axis"
    return None


def matmul_shapes(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """matmul of an activation [..., M, K] by a 2-D [K, N] rhs (weights), or by an activation
    [..., K, N] with the same batch dimensions (batch matmul, no broadcasting); a bias is constant."""
    x, w = d.inputs[0].shape, d.inputs[1].shape
    if len(w) < 2 or len(x) < 2 and len(w) > 2:
        return f"operand ranks {len(x)} x {len(w)}"
    if x[-1] != w[-2]:
        return f"inner dimensions differ: {list(x)} x {list(w)}"
    if len(w) > 2:
        if d.inputs[1].is_const:
            return f"a constant rhs of rank {len(w)} (constant weights must be 2-D)"
        if tuple(x[:-2]) != tuple(w[:-2]):
            return f"batch dimensions differ: {list(x[:-2])} vs {list(w[:-2])} (no broadcasting)"
    if len(d.inputs) > 2 and not d.inputs[2].is_const:
        return "the bias is not a constant"
    return None


def activation_supported(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Fused activations: relu, clip, sigmoid, tanh, gelu (also x * 0.5 * (1 + erf(x / sqrt(2))), any
    order, constants checked), gelu_tanh, silu (also x * sigmoid(x)), hard sigmoid / hard swish
    (clip(x + 3, 0, 6) / 6, the clamp also as maximum and minimum, the scale also as * 1/6; constants
    checked), leaky relu with 0 <= alpha <= 1. Alone, hard sigmoid / swish run in fp32 on ACC with fp32
    constants."""
    a = d.activation
    if a is None:
        return None
    if a.kind == "leaky_relu" and not 0.0 <= a.alpha <= 1.0:
        return f"leaky relu slope {a.alpha} outside [0, 1]"
    if a.kind == "clip" and not a.lo <= a.hi:
        return f"clip bounds {a.lo} > {a.hi}"
    return None


def unary_ops(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Unary operators alone on the vector unit: neg (x * -1), abs (max(x, -x)), exp, reciprocal (also
    1 / x), power with a constant exponent 2 (x * x) or 0.5 (sqrt), sqrt (1 / rsqrt(x), rsqrt in fp32
    on ACC), each rounded once to fp16; gelu also in its erf form x * 0.5 * (1 + erf(x / sqrt(2))),
    any order, constants checked. Log stays on the CPU: the vector unit has no logarithm."""
    a = d.activation
    if a is None:
        return None
    if a.kind == "log":
        return "the vector unit has no logarithm (its functions: exp, tanh, sigmoid, gelu, rsqrt, reciprocal)"
    if a.kind == "power":
        return f"power with exponent {a.alpha!r} (the vector unit does 2 as x * x and 0.5 as sqrt)"
    return None


def division(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Division by a tensor runs as a * reciprocal(b) (the reciprocal rounded to b's storage type, then
    the product); division by a constant is a multiplication by its fp32 reciprocal, with no zero in it."""
    return None


def reduce_axes(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """sum / max / min over one run of adjacent axes (or all; over non-adjacent axes the partitioner
    makes one reduction per run first): whole rows per tile, or chunks whose partial results are
    combined when a row does not fit; the sum in fp32 on ACC rounded once, max exact in fp16, min as
    -max(-x)."""
    rank = len(d.inputs[0].shape)
    axes = d.attrs["axis"]
    axes = tuple(range(rank)) if axes is None else tuple(sorted({x % rank for x in axes}))
    if not axes:
        return "a reduction over no axis"
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        return f"{d.attrs['op']} over non-adjacent axes {axes} (one run of adjacent axes)"
    return None


def layer_norm_params(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """layer_norm over the last axis, gamma and beta constants per element of it, epsilon >= 0: mean,
    x - mean, mean of the squares, + epsilon, rsqrt, scale and shift all in fp32 on ACC, rounded once
    to fp16."""
    eps = d.attrs["epsilon"]
    if not eps >= 0.0:
        return f"epsilon {eps} < 0"
    return None


def broadcastable(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Elementwise operands broadcast to the result (each dim equal to the result's or 1)."""
    out = d.output.shape
    for t in d.inputs:
        s = (1,) * (len(out) - len(t.shape)) + tuple(t.shape)
        if len(s) != len(out) or any(a not in (1, b) for a, b in zip(s, out)):
            return f"operand {list(t.shape)} does not broadcast to {list(out)}"
    return None


def prelu_slope(d: OpDesc, cfg: NPUConfig, opts: CompileOptions | None = None) -> str | None:
    """PReLU (relax.nn.prelu): the slope is a constant with one value per channel of its axis, or one
    value; it runs as max(x, 0) + slope * min(x, 0) in fp32 on ACC, the slope broadcast per channel."""
    if d.attrs.get("op") != "prelu":
        return None
    slope = d.inputs[1]
    if not slope.is_const:
        return "the slope is not a constant"
    return None


def pool_params(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Pooling in NCHW/NHWC, no ceil mode, no dilation, window/stride 1..255, padding smaller than the
    window, and average pooling that does not count padding (TFLite semantics) unless there is none."""
    a = d.attrs
    if a["layout"] not in ("NCHW", "NHWC") or a["out_layout"] != a["layout"]:
        return f"layout {a['layout']} -> {a['out_layout']}"
    if a["ceil_mode"]:
        return "ceil_mode=True"
    if any(x != 1 for x in a["dilation"]):
        return f"dilation {a['dilation']}"
    if not all(1 <= x <= 255 for x in tuple(a["pool_size"]) + tuple(a["strides"])):
        return f"window {a['pool_size']} / stride {a['strides']} outside 1..255"
    p = a["padding"]
    if p[0] >= a["pool_size"][0] or p[1] >= a["pool_size"][1] or p[2] >= a["pool_size"][0] or p[3] >= a["pool_size"][1]:
        return f"padding {p} not smaller than the window {a['pool_size']}"
    if a["mode"] == "avg" and a["count_include_pad"] and any(p):
        return "average pooling that counts padding"
    return None


def softmax_last_axis(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """softmax over the last axis."""
    rank = len(d.inputs[0].shape)
    if d.attrs["axis"] % rank != rank - 1:
        return f"softmax over axis {d.attrs['axis']} of a rank-{rank} tensor (last axis only)"
    return None


def mean_adjacent_axes(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """mean over one run of adjacent axes."""
    rank = len(d.inputs[0].shape)
    axes = d.attrs["axis"]
    axes = tuple(range(rank)) if axes is None else tuple(sorted(x % rank for x in axes))
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        return f"mean over non-adjacent axes {axes}"
    return None


def tiles_fit(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """The tiling stage finds a plan whose double-buffered tiles fit the configuration's SRAMs."""
    plan = tiling.plan(d, cfg, opts)
    return plan.reason if isinstance(plan, Refusal) else None


def transposed_conv_rewrite(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """relax.nn.conv2d_transpose (ONNX ConvTranspose, TFLite TRANSPOSE_CONV) runs as operators the NPU
    already runs: one stride-1 conv2d whose weights pack the stride_h x stride_w phase kernels as output
    channels (sub-pixel decomposition), depth-to-space (reshape, one 4-D transpose by the DMA, reshape)
    and a strided slice for what padding / output_padding leave over. Any stride, kernel size and
    padding (asymmetric too) with output_padding; dilation as a kernel with zeros; a bias add that is its
    only user goes into the phase convolution (npu.conv2d_bias). Needs constant weights, groups=1 (grouped and depthwise ones would need a 5-D
    depth-to-space), NHWC or NCHW with batch 1 (at stride 1 any batch), padding smaller than the
    kernel. What is not rewritten stays on the CPU with this reason."""
    from .resample import conv_transpose_plan

    try:
        conv_transpose_plan(d.inputs[0].shape, d.inputs[1].const, d.attrs)
    except Unsupported as e:
        return str(e)
    return None


def resize_rewrite(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """relax.image.resize2d (ONNX Resize / Upsample, TFLite RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR),
    NCHW or NHWC, is rewritten into DMA operators. Nearest neighbour (float, or int8 / int16: the same
    bytes moved, so TFLite's quantised resize is exact), any coordinate mode
    (asymmetric, half_pixel, pytorch_half_pixel, align_corners, tf_half_pixel_for_nn) and rounding
    (floor, ceil, round_prefer_floor / _ceil) whose source index per axis, computed as TVM computes
    it, is a whole-number repeat (k // r: a broadcast with stride-0 reads) or a strided slice
    (b + s k: downsampling). Bilinear exactly x2 with half-pixel centres (half_pixel, pytorch_half_pixel;
    NCHW batch 1 or NHWC): clamped-edge padding by slices and concats, a depthwise 2x2 convolution with
    four phase outputs per channel (weights 1/16, 3/16, 9/16, exact in fp16), depth-to-space in two 4-D
    transposes and a crop of one row and column on each side. Other scales, modes and cubic stay on the CPU with this reason."""
    from .resample import resize_plan

    try:
        resize_plan(d.inputs[0].shape, d.output.shape, dict(d.attrs, dtype=d.inputs[0].dtype))
    except Unsupported as e:
        return str(e)
    return None


COMMON = [float_tensors, rank_at_most_4, fp16_constants]
BY_KIND: Dict[str, List[Constraint]] = {
    "conv2d": COMMON + [conv_layout, constant_weights, conv_params, bias_per_channel, activation_supported,
                        tiles_fit],
    "matmul": COMMON + [matmul_shapes, bias_per_channel, activation_supported, tiles_fit],
    "binary": COMMON + [broadcastable, prelu_slope, division, tiles_fit],
    "activation": COMMON + [activation_supported, unary_ops, tiles_fit],
    "reduce": COMMON + [reduce_axes, tiles_fit],
    "layer_norm": COMMON + [layer_norm_params, tiles_fit],
    "pool": COMMON + [pool_params, tiles_fit],
    "softmax": COMMON + [softmax_last_axis, tiles_fit],
    "mean": COMMON + [mean_adjacent_axes, tiles_fit],
    "concat": COMMON + [tiles_fit],
    "layout": [layout_dtypes, layout_params, tiles_fit],
}

# Operators the partitioner rewrites into the operators above before matching (relay_ext/rewrites.py):
# the Relax operator -> its rules. One that a rule refuses stays on the CPU with that rule's reason.
REWRITTEN: Dict[str, List[Constraint]] = {
    "relax.nn.conv2d_transpose": [float_tensors, transposed_conv_rewrite],
    "relax.image.resize2d": [resize_rewrite],
}


def rewrite_refusal(d: OpDesc) -> Optional[str]:
    """The first reason a rule of REWRITTEN gives for `d` (d.kind: the Relax operator), None if none."""
    for c in REWRITTEN[d.kind]:
        try:
            r = c(d, None)
        except Unsupported as e:
            r = str(e)
        if r:
            return f"{c.__name__}: {r}"
    return None


def int8_tensors(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Integer composites: int8 activations in and out, int8 weights, int32 bias (tvm_npu.quant
    has already refused per-channel activations, asymmetric weights and unrepresentable scales)."""
    want = ["int8", "int8", "int32"]
    for t, dt in zip(d.inputs, want):
        if t.dtype != dt:
            return f"dtype {t.dtype} where the integer path takes {dt}"
    if d.output.dtype != "int8":
        return f"output dtype {d.output.dtype} (int8 only)"
    return None


def int8_operands(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """Integer vector operators: every operand and the result are int8 (per-tensor quantised)."""
    for t in d.inputs + [d.output]:
        if t.dtype != "int8":
            return f"dtype {t.dtype} (int8 only)"
    return None


def int32_accumulator(d: OpDesc, cfg: NPUConfig, opts: Optional[CompileOptions] = None) -> Optional[str]:
    """The int32 accumulator cannot overflow: taps per output x 255 x 128 plus the largest |bias| stays
    below 2^31 (|x - zp_in| <= 255 and |w| <= 128 for int8)."""
    if d.kind == "conv2d":
        w = d.inputs[1].shape
        kl = d.attrs["kernel_layout"]
        taps = w[kl.index("H")] * w[kl.index("W")] * w[kl.index("I")]
    else:
        taps = d.inputs[0].shape[-1]
    bias = int(abs(d.quant.bias.astype("int64")).max()) if d.quant is not None and d.quant.bias.size else 0
    worst = taps * 255 * 128 + bias
    if worst >= 2**31:
        return f"{taps} taps per output can reach {worst} in the int32 accumulator (limit 2^31 - 1)"
    return None


QUANT_BY_KIND: Dict[str, List[Constraint]] = {
    "qlut": [int8_operands, rank_at_most_4, tiles_fit],
    "qbinary": [int8_operands, rank_at_most_4, broadcastable, tiles_fit],
    "qpool": [int8_operands, rank_at_most_4, pool_params, tiles_fit],
    "qmean": [int8_operands, rank_at_most_4, mean_adjacent_axes, tiles_fit],
    "qconcat": [int8_operands, rank_at_most_4, tiles_fit],
    "conv2d": [int8_tensors, rank_at_most_4, conv_layout, constant_weights, conv_params, bias_per_channel,
               int32_accumulator, tiles_fit],
    "matmul": [int8_tensors, rank_at_most_4, matmul_shapes, bias_per_channel, int32_accumulator, tiles_fit],
}


def check(d: OpDesc, cfg: NPUConfig, opts: CompileOptions) -> List[str]:
    """All failed constraints' reasons (empty: the NPU can run it)."""
    reasons = []
    for c in (QUANT_BY_KIND if d.integer else BY_KIND)[d.kind]:
        try:
            r = c(d, cfg, opts)
        except Unsupported as e:
            r = str(e)
        if r:
            reasons.append(f"{c.__name__}: {r}")
            break  # later constraints assume the earlier ones hold
    return reasons
