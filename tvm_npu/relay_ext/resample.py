"""Plans for the operators that change the spatial resolution, rewritten into operators the NPU runs
(relay_ext/rewrites.py applies them; relay_ext/constraints.py gives the reason when one does not apply).

Transposed convolution (sub-pixel decomposition). With stride s, output row y = m * s + a' (phase a')
of `conv2d_transpose(x, w, padding (p, ...))` is, with a' + p = q * s + a,

    sum_t x[m + q - t] * w[a + s * t]          (t >= 0, a + s * t < k)

a correlation of x with a small kernel per phase. All phases read x at m + u - P for taps u in
[0, U) (P = T - 1 - min q, T = ceil(k / s), U <= T + max q - min q: taps no phase uses are dropped),
so ONE stride-1 convolution with
padding P whose weights pack the s_h * s_w phase kernels as s_h * s_w * Cout output channels (phase
major) computes every output value; depth-to-space (a reshape, one 4-D transpose done by the DMA and
a reshape) interleaves the phases, and a strided slice crops what output_padding and the padding
leave over. Stride 1 is a plain convolution with the flipped kernel; dilation is a kernel with zeros.

Resize, nearest neighbour. The source index of every output row and column is computed exactly as
TVM's resize2d computes it (float32, the coordinate mode, the rounding mode, clamped); an axis whose
index is `k // r` (integer upsampling: a repeat) becomes a broadcast done by the DMA with stride-0
reads, one whose index is `b + s * k` (downsampling, identity, crop) a strided slice.

Resize, bilinear x2 with half-pixel centres (ONNX half_pixel / pytorch_half_pixel, TFLite
half_pixel_centers): out[2k] = x[k - 1] / 4 + 3 x[k] / 4 and out[2k + 1] = 3 x[k] / 4 + x[k + 1] / 4 with
edges clamped. With xe = x padded by one clamped row and column on each side (slices and concats: DMA
copies), a depthwise 2x2 convolution with 4 output channels per channel gives, per axis, phase 0:
3/4 xe[j] + 1/4 xe[j + 1] = out[2j - 1] and phase 1: 1/4 xe[j] + 3/4 xe[j + 1] = out[2j] for j in
[0, n]; depth-to-space (two 4-D transposes) interleaves them into z[2j + p], so out[y] = z[y + 1]: a
crop of one row and column on each side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from ..ir.desc import Unsupported

# ---- transposed convolution ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AxisPlan:
    """One spatial axis of a transposed convolution as a stride-1 convolution over phases."""

    stride: int
    taps: int  # U: kernel extent of the convolution
    pad_before: int  # P
    pad_after: int
    rows: int  # L: convolution output rows (each gives `stride` output rows)
    out: int  # output rows of the transposed convolution (L * stride - out: cropped at the end)
    phase_taps: tuple[tuple[tuple[int, int], ...], ...]  # per output phase a': ((u, kernel index), ...)


def axis_plan(n_in: int, k: int, s: int, pad_begin: int, pad_end: int, out_pad: int) -> AxisPlan:
    """The convolution over phases of one axis (see the module docstring); raises Unsupported."""
    if s < 1 or k < 1:
        raise Unsupported(f"stride {s}, kernel {k}")
    out = (n_in - 1) * s + k + out_pad - pad_begin - pad_end
    if out < 1:
        raise Unsupported("empty output")
    T = -(-k // s)
    qs = [(a + pad_begin) // s for a in range(s)]
    P = T - 1 - min(qs)
    if P < 0:
        raise Unsupported(f"padding {pad_begin} of a kernel of {k} at stride {s} crops whole input rows")
    phases = []
    for ap in range(s):
        q, a = divmod(ap + pad_begin, s)
        phases.append([(P + q - t, a + s * t) for t in range(T) if a + s * t < k])
    # taps no phase uses are dropped from the window (k3 s2 p1: 2 taps instead of 3), as long as the
    # padding before stays >= 0
    used = [u for ph in phases for u, _ in ph] or [0]
    lo = min(min(used), P)
    P -= lo
    U = max(used) - lo + 1
    phases = [tuple((u - lo, i) for u, i in ph) for ph in phases]
    rows = -(-out // s)
    pad_after = max(0, rows + U - 1 - n_in - P)
    rows = n_in + P + pad_after - U + 1
    return AxisPlan(s, U, P, pad_after, rows, out, tuple(phases))


@dataclasses.dataclass(frozen=True)
class ConvTransposePlan:
    h: AxisPlan
    w: AxisPlan
    weight: np.ndarray  # OIHW, (s_h * s_w * Cout) x Cin x U_h x U_w, phase major: ((a' * s_w + b') * Cout + o)
    cout: int


def canonical_weight(w: np.ndarray, kernel_layout: str) -> np.ndarray:
    """The transposed convolution's weights as (Cin, Cout / groups, kh, kw)."""
    if sorted(kernel_layout) != sorted("IOHW"):
        raise Unsupported(f"kernel layout {kernel_layout}")
    return np.transpose(w, [kernel_layout.index(c) for c in "IOHW"])


def conv_transpose_plan(x_shape: Sequence[int], w: np.ndarray | None, attrs: dict) -> ConvTransposePlan:
    """How relax.nn.conv2d_transpose runs as conv2d + depth-to-space + crop; raises Unsupported with
    the reason it cannot. attrs: strides, padding, output_padding, dilation, groups, data_layout,
    kernel_layout, out_layout (plain Python values)."""
    layout = attrs["data_layout"]
    if layout not in ("NCHW", "NHWC") or attrs["out_layout"] != layout:
        raise Unsupported(f"data layout {layout} -> {attrs['out_layout']} (NCHW or NHWC)")
    if w is None:
        raise Unsupported("the weights are not a constant")
    if attrs["groups"] != 1:
        raise Unsupported(f"groups {attrs['groups']}: grouped / depthwise transposed convolutions need a 5-D "
                          "depth-to-space transpose (only groups=1 is rewritten)")
    n = x_shape[0]
    if layout == "NCHW" and n != 1 and math.prod(attrs["strides"]) > 1:
        raise Unsupported(f"batch {n} in NCHW: the depth-to-space transpose would be 5-D (batch 1 only)")
    wc = canonical_weight(w, attrs["kernel_layout"])
    cin, cout, kh, kw = wc.shape
    dh, dw = attrs["dilation"]
    if dh < 1 or dw < 1:
        raise Unsupported(f"dilation {dh, dw}")
    if (dh, dw) != (1, 1):  # a dilated kernel is a kernel with zeros between its taps
        wd = np.zeros((cin, cout, (kh - 1) * dh + 1, (kw - 1) * dw + 1), wc.dtype)
        wd[:, :, ::dh, ::dw] = wc
        wc, kh, kw = wd, wd.shape[2], wd.shape[3]
    pt, pl, pb, pr = attrs["padding"]
    oph, opw = attrs["output_padding"]
    sh, sw = attrs["strides"]
    h_in, w_in = (x_shape[2], x_shape[3]) if layout == "NCHW" else (x_shape[1], x_shape[2])
    if min(pt, pl, pb, pr, oph, opw) < 0:
        raise Unsupported(f"negative padding {attrs['padding']} / output padding {attrs['output_padding']}")
    ph = axis_plan(h_in, kh, sh, pt, pb, oph)
    pw = axis_plan(w_in, kw, sw, pl, pr, opw)
    if max(ph.pad_before, ph.pad_after, pw.pad_before, pw.pad_after) > 255:
        raise Unsupported("the convolution's padding would exceed 255")
    k = np.zeros((sh, sw, cout, cin, ph.taps, pw.taps), wc.dtype)
    for a, taps_h in enumerate(ph.phase_taps):
        for b, taps_w in enumerate(pw.phase_taps):
            for u, i in taps_h:
                for v, j in taps_w:
                    k[a, b, :, :, u, v] = wc[:, :, i, j].T
    return ConvTransposePlan(ph, pw, k.reshape(sh * sw * cout, cin, ph.taps, pw.taps).astype(w.dtype), cout)


# ---- resize ---------------------------------------------------------------------------------------

NEAREST_MODES = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners", "tf_half_pixel_for_nn")


def source_index(n_in: int, n_out: int, mode: str, rounding: str) -> np.ndarray:
    """The input index each output index of a nearest-neighbour resize reads, as TVM's topi resize2d
    computes it (float32 coordinates, its rounding, clamped to the input)."""
    f32 = np.float32
    x = np.arange(n_out, dtype=f32)
    scale = f32(n_in) / f32(n_out)
    if mode == "asymmetric" and rounding in ("floor", "") and n_out % n_in == 0:
        return np.arange(n_out) // (n_out // n_in)  # TVM's integer-division path
    if mode == "half_pixel" or (mode == "pytorch_half_pixel" and n_out > 1):
        c = (x + f32(0.5)) * scale - f32(0.5)
    elif mode == "pytorch_half_pixel":
        c = np.zeros_like(x)
    elif mode == "align_corners":
        c = (f32(n_in - 1) / f32(n_out - 1) * x) if n_out > 1 else np.zeros_like(x)
    elif mode == "asymmetric":
        c = scale * x
    elif mode == "tf_half_pixel_for_nn":
        c = (x + f32(0.5)) * scale
    else:
        raise Unsupported(f"coordinate transformation mode {mode}")
    c = c.astype(f32)
    if rounding == "":  # TVM's default for nearest: round with align_corners, else floor
        rounding = "round" if mode == "align_corners" else "floor"
    if rounding == "round":
        i = np.where(c >= 0, np.floor(c + f32(0.5)), np.ceil(c - f32(0.5)))  # half away from zero (llvm.round)
    elif rounding == "round_prefer_floor":
        i = np.ceil(c - f32(0.5))
    elif rounding == "round_prefer_ceil":
        i = np.floor(c + f32(0.5))
    elif rounding == "floor":
        i = np.floor(c + f32(1e-5))
    elif rounding == "ceil":
        i = np.ceil(c - f32(1e-5))
    else:
        raise Unsupported(f"rounding method {rounding}")
    return np.clip(i.astype(np.int64), 0, n_in - 1)


@dataclasses.dataclass(frozen=True)
class AxisResample:
    """One axis of a nearest resize as data movement: out[k] = in[begin + step * (k // repeat)]."""

    begin: int
    step: int
    repeat: int
    size: int  # output size


def nearest_axis(n_in: int, n_out: int, mode: str, rounding: str) -> AxisResample:
    idx = source_index(n_in, n_out, mode, rounding)
    k = np.arange(n_out)
    if n_out % n_in == 0 and np.array_equal(idx, k // (n_out // n_in)):
        return AxisResample(0, 1, n_out // n_in, n_out)
    step = int(idx[1] - idx[0]) if n_out > 1 else 1
    if step >= 1 and np.array_equal(idx, idx[0] + step * k):
        return AxisResample(int(idx[0]), step, 1, n_out)
    raise Unsupported(f"nearest resize {n_in} -> {n_out} ({mode}, {rounding}) reads input rows "
                      f"{idx[:8].tolist()}...: neither a whole-number repeat nor a strided slice")


BILINEAR_X2_MODES = ("half_pixel", "pytorch_half_pixel")


def resize_plan(x_shape: Sequence[int], out_shape: Sequence[int], attrs: dict) -> tuple[str, tuple]:
    """("nearest", (h axis, w axis)) or ("bilinear2", ()) when resize2d runs as NPU operators; raises
    Unsupported with the reason otherwise. attrs: layout, method, coordinate_transformation_mode,
    rounding_method, dtype (plain values)."""
    layout = attrs["layout"]
    if layout not in ("NCHW", "NHWC"):
        raise Unsupported(f"layout {layout}")
    method = attrs["method"]
    if attrs["dtype"] not in ("float32", "float16") + (("int8", "int16") if method == "nearest_neighbor" else ()):
        raise Unsupported(f"dtype {attrs['dtype']} (float resizes, and int8 / int16 nearest ones, only)")
    hw = (2, 3) if layout == "NCHW" else (1, 2)
    (hi, wi), (ho, wo) = [x_shape[a] for a in hw], [out_shape[a] for a in hw]
    mode = attrs["coordinate_transformation_mode"]
    if method == "nearest_neighbor":
        if mode not in NEAREST_MODES:
            raise Unsupported(f"nearest resize with coordinate mode {mode}")
        return "nearest", (nearest_axis(hi, ho, mode, attrs["rounding_method"]),
                           nearest_axis(wi, wo, mode, attrs["rounding_method"]))
    if method == "linear":
        if mode not in BILINEAR_X2_MODES:
            raise Unsupported(f"bilinear resize with coordinate mode {mode} (half_pixel / pytorch_half_pixel x2 "
                              "only)")
        if (ho, wo) != (2 * hi, 2 * wi):
            raise Unsupported(f"bilinear resize {hi}x{wi} -> {ho}x{wo} (exactly x2 on both axes only)")
        if layout == "NCHW" and x_shape[0] != 1:
            raise Unsupported(f"bilinear resize of batch {x_shape[0]} in NCHW (batch 1 only)")
        return "bilinear2", ()
    raise Unsupported(f"resize method {method} (nearest, and bilinear x2, only)")


# per phase, the weights of taps 0 and 1 on the padded input: phase 0 gives odd outputs, phase 1 even ones
BILINEAR_X2_TAPS = ((0.75, 0.25), (0.25, 0.75))


def bilinear_x2_weight(channels: int, dtype: str) -> np.ndarray:
    """Depthwise weights (4 * C, 1, 2, 2): channel 4c + 2a + b is phase (a, b) of channel c, on the
    input padded by one clamped row and column (weights 9/16, 3/16, 1/16: exact in fp16)."""
    k = np.einsum("au,bv->abuv", np.array(BILINEAR_X2_TAPS), np.array(BILINEAR_X2_TAPS))
    return np.broadcast_to(k.reshape(1, 4, 1, 2, 2), (channels, 4, 1, 2, 2)).reshape(4 * channels, 1, 2, 2).astype(dtype)
