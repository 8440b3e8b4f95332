"""Geometry of the MAC operators, read from their descriptions: convolution sizes, matmul sizes, MACs."""

from __future__ import annotations

import dataclasses
import math
from typing import Tuple

from .desc import OpDesc, Unsupported

LAYOUT_AXES = {"NCHW": (0, 2, 3, 1), "NHWC": (0, 1, 2, 3)}  # logical axes of SRAM (n, h, w, c)


@dataclasses.dataclass(frozen=True)
class ConvGeom:
    n: int
    h: int
    w: int
    cin: int
    cout: int
    oh: int
    ow: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pad: Tuple[int, int, int, int]  # top, left, bottom, right
    groups: int

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin

    @property
    def cg(self) -> int:  # input channels per group
        return self.cin // self.groups

    @property
    def ng(self) -> int:  # output channels per group
        return self.cout // self.groups

    def in_rows(self, rows: int) -> int:
        return (rows - 1) * self.sh + (self.kh - 1) * self.dh + 1

    def tile_in_channels(self, cols: int, depth: int) -> int:
        if self.depthwise:
            return max(1, cols * self.cin // self.cout)
        if self.groups > 1:
            return (cols // self.ng) * self.cg
        return depth


def kernel_hw(desc: OpDesc) -> Tuple[int, int]:
    w = desc.inputs[1].shape
    layout = desc.attrs["kernel_layout"]
    return w[layout.index("H")], w[layout.index("W")]


def conv_geom(desc: OpDesc) -> ConvGeom:
    layout = desc.attrs["data_layout"]
    if layout not in LAYOUT_AXES:
        raise Unsupported(f"data layout {layout} (NCHW or NHWC only)")
    ax = LAYOUT_AXES[layout]
    x, o = desc.inputs[0].shape, desc.output.shape
    kh, kw = kernel_hw(desc)
    p = desc.attrs["padding"]
    pad = (p[0], p[1], p[2], p[3]) if len(p) == 4 else (p[0], p[1], p[0], p[1])
    return ConvGeom(x[ax[0]], x[ax[1]], x[ax[2]], x[ax[3]], o[ax[3]], o[ax[1]], o[ax[2]], kh, kw,
                    *desc.attrs["strides"], *desc.attrs["dilation"], pad, desc.attrs["groups"])


def matmul_geom(desc: OpDesc) -> Tuple[int, int, int]:
    """(rows per batch, K, N). A 2-D rhs is shared by all rows of lhs; a batched rhs pairs with lhs
    batch by batch (matmul_batches)."""
    x, w = desc.inputs[0].shape, desc.inputs[1].shape
    rows = math.prod(x[:-1]) if len(w) == 2 else x[-2]
    return rows, x[-1], w[-1]


def matmul_batches(desc: OpDesc) -> int:
    w = desc.inputs[1].shape
    return 1 if len(w) == 2 else math.prod(w[:-2])


def macs_of(desc: OpDesc) -> int:
    if desc.kind == "conv2d":
        g = conv_geom(desc)
        return g.n * g.oh * g.ow * g.cout * g.kh * g.kw * g.cg
    if desc.kind == "matmul":
        rows, k, n = matmul_geom(desc)
        return matmul_batches(desc) * rows * k * n
    return 0


def pad4(shape) -> tuple:
    """A shape of rank <= 4 as 4-D, leading unit dims added."""
    if len(shape) > 4:
        raise Unsupported(f"rank {len(shape)} > 4")
    return (1,) * (4 - len(shape)) + tuple(shape)


def mean_axes(shape, axis) -> tuple:
    """(outer, red, inner) of a mean over adjacent axes (`axis` None: all)."""
    rank = len(shape)
    try:
        axes = tuple(range(rank)) if axis is None else tuple(sorted({int(a) % rank for a in axis}))
    except (TypeError, ValueError, ZeroDivisionError):
        raise Unsupported(f"mean axis {axis!r} of a rank-{rank} tensor") from None
    if not axes:
        raise Unsupported("mean over no axis")
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        raise Unsupported(f"mean over non-adjacent axes {axes}")
    return (math.prod(shape[:axes[0]]), math.prod(shape[axes[0]:axes[-1] + 1]), math.prod(shape[axes[-1] + 1:]))


# ---- layout operators (data movement only) ---------------------------------------------------------

MAX_ROW = 512  # elements of the last dim a reshape's flat view prefers (one SRAM row of a tile: small
#                enough for the smallest configurations; tiles stack rows, so DMA runs stay long)
MAX_ROW_LARGE = 8192  # ... and may have, when the preferred width leaves more than 65535 rows


@dataclasses.dataclass(frozen=True)
class LayoutGeom:
    """A layout operator on 4-D views: output element o[i] reads input element x[j] with, per output
    axis k, j[src[k][0]] = src[k][1] + src[k][2] * i[k], and every input axis no output axis walks
    held at fixed[d]."""

    in_shape: Tuple[int, int, int, int]
    out_shape: Tuple[int, int, int, int]
    src: Tuple[Tuple[int, int, int], ...]
    fixed: Tuple[int, int, int, int]


def flat_rows(n: int) -> Tuple[int, int]:
    """(rows, cols) with rows * cols == n and cols the largest divisor of n up to MAX_ROW (MAX_ROW_LARGE
    when that leaves more than 65535 rows): the view of a dense tensor that a reshape copies (the same
    bytes in the same order on both sides)."""
    divisors = set()
    d = 1
    while d * d <= n:
        if n % d == 0:
            divisors.update((d, n // d))
        d += 1
    for cap in (MAX_ROW, MAX_ROW_LARGE):
        cols = max(c for c in divisors if c <= cap)
        if n // cols <= 65535:
            break
    return n // cols, cols


def layout_geom(desc: OpDesc) -> LayoutGeom:
    """The 4-D gather of a layout operator (attrs["op"]: "reshape", "permute" or "slice")."""
    a = desc.attrs
    xs, os_ = tuple(desc.inputs[0].shape), tuple(desc.output.shape)
    if a["op"] == "reshape":
        if math.prod(xs) != math.prod(os_):
            raise Unsupported(f"reshape of {list(xs)} into {list(os_)} changes the element count")
        rows, cols = flat_rows(math.prod(os_))
        if rows > 65535:
            raise Unsupported(f"reshape of {math.prod(os_)} elements: no view of at most 65535 rows of at most "
                              f"{MAX_ROW_LARGE} elements")
        shape = (1, 1, rows, cols)
        return LayoutGeom(shape, shape, tuple((k, 0, 1) for k in range(4)), (0, 0, 0, 0))
    if len(xs) != len(os_):
        raise Unsupported(f"{a['op']} from rank {len(xs)} to rank {len(os_)}")
    if any(v > 65535 for v in xs + os_):
        raise Unsupported(f"dimension above 65535 in {list(xs)} -> {list(os_)}")
    lead = 4 - len(xs)
    if lead < 0:
        raise Unsupported(f"rank {len(xs)} tensor (1 to 4 supported)")
    src = [(k, 0, 1) for k in range(lead)]
    if a["op"] == "permute":
        perm = a["axes"]
        if sorted(perm) != list(range(len(xs))):
            raise Unsupported(f"permutation {list(perm)} of rank {len(xs)}")
        src += [(lead + p, 0, 1) for p in perm]
    elif a["op"] == "slice":
        for d, (b, s) in enumerate(zip(a["begin"], a["steps"])):
            if s < 1 or b < 0 or b + s * (os_[d] - 1) >= xs[d]:
                raise Unsupported(f"slice of axis {d}: start {b}, step {s}, {os_[d]} elements of {xs[d]}")
            src.append((lead + d, b, s))
    elif a["op"] == "broadcast":  # a dim of 1 read again for every output index: a stride-0 DMA read
        for d, (i, o) in enumerate(zip(xs, os_)):
            if i not in (1, o):
                raise Unsupported(f"broadcast of {list(xs)} to {list(os_)}")
            src.append((lead + d, 0, 0 if i != o else 1))
    else:
        raise Unsupported(f"layout operator {a['op']}")
    return LayoutGeom(pad4(xs), pad4(os_), tuple(src), (0, 0, 0, 0))


def pool_geometry(desc: OpDesc):
    """(h, w, c, oh, ow, kh, sh) of a pooling operator in its layout."""
    at = desc.attrs
    if at.get("layout") not in LAYOUT_AXES:
        raise Unsupported(f"pooling layout {at.get('layout')} (NCHW or NHWC)")
    ax = LAYOUT_AXES[at["layout"]]
    xs, os_ = desc.inputs[0].shape, desc.output.shape
    _, h, w, c = (xs[a] for a in ax)
    return h, w, c, os_[ax[1]], os_[ax[2]], at["pool_size"][0], at["strides"][0]
