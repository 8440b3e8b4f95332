#!/usr/bin/env python3
"""Functional throughput of the NPU emulator (GMAC/s on one core) beside numpy doing the same arithmetic.

Each case is one layer of MobileNetV1 at 224x224 or a transformer GEMM, compiled by hand into
load -> MAC op -> requantise -> store, run on the emulator and checked bit-exactly against numpy
(int8 x int8 -> int32 with the same requantisation). The configuration is npu-edge with SRAMs
enlarged so that every layer fits in one tile: this measures the emulator's kernels, not tiling.

    python scripts/bench_emulator.py [--repeat 3] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import npu_emulator  # noqa: E402
from tvm_npu.config import PRESETS  # noqa: E402
from tvm_npu.isa import DType, DramRef, Program, Region, Space, TensorRef  # noqa: E402
from tvm_npu.isa.spec import sram_tensor_bytes  # noqa: E402

MIB = 1 << 20
BENCH_CONFIG = PRESETS["npu-edge"].replace(name="npu-edge-bench", act_sram_bytes=32 * MIB,
                                           wgt_sram_bytes=16 * MIB, acc_sram_bytes=32 * MIB)

# (name, kind, N, H, W, Cin, Cout, kernel, stride)  ('gemm': H=M rows, Cin=K, Cout=N)
CASES = [
    ("mbv1.conv1 3x3/2 224x224x3->32", "conv", 1, 225, 225, 3, 32, 3, 2),
    ("mbv1.dw1 3x3 112x112x32", "dw", 1, 114, 114, 32, 32, 3, 1),
    ("mbv1.pw1 1x1 112x112x32->64", "conv", 1, 112, 112, 32, 64, 1, 1),
    ("mbv1.dw2 3x3/2 112x112x64", "dw", 1, 113, 113, 64, 64, 3, 2),
    ("mbv1.pw2 1x1 56x56x64->128", "conv", 1, 56, 56, 64, 128, 1, 1),
    ("mbv1.conv 3x3 28x28x128->128", "conv", 1, 30, 30, 128, 128, 3, 1),
    ("mbv1.pw 1x1 28x28x256->256", "conv", 1, 28, 28, 256, 256, 1, 1),
    ("mbv1.pw 1x1 14x14x512->512", "conv", 1, 14, 14, 512, 512, 1, 1),
    ("mbv1.pw 1x1 7x7x1024->1024", "conv", 1, 7, 7, 1024, 1024, 1, 1),
    ("minilm.ffn gemm 128x384->1536", "gemm", 1, 128, 1, 384, 1536, 1, 1),
    ("minilm.ffn gemm 128x1536->384", "gemm", 1, 128, 1, 1536, 384, 1, 1),
    ("mbv1.fc gemm 1x1024->1000", "gemm", 1, 1, 1, 1024, 1000, 1, 1),
]
QUICK = {CASES[1][0], CASES[2][0], CASES[9][0]}

MULT, SHIFT, A_ZP, O_ZP = 1518500250, -9, 3, -5  # a realistic requantisation (scale ~ 2^-9.5)


def _mbqm(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier for shift <= 0, in int64 numpy."""
    prod = x.astype(np.int64) * mult
    nudge = np.where(prod >= 0, 1 << 30, 1 - (1 << 30))
    high = (prod + nudge) // (1 << 31)
    high = np.where(prod + nudge < 0, -((-(prod + nudge)) // (1 << 31)), high)  # C truncation
    e = -shift
    mask = (1 << e) - 1
    rem = high & mask
    thr = (mask >> 1) + (high < 0)
    return (high >> e) + (rem > thr)


def build(kind, n, h, w, cin, cout, k, stride):
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    if kind == "gemm":
        a_shape, w_shape, o_shape = (1, 1, h, cin), (1, 1, cin, cout), (1, 1, h, cout)
    elif kind == "conv":
        a_shape, w_shape, o_shape = (n, h, w, cin), (k, k, cin, cout), (n, oh, ow, cout)
    else:
        a_shape, w_shape, o_shape = (n, h, w, cin), (k, k, 1, cout), (n, oh, ow, cout)
    a = TensorRef(Space.ACT, DType.INT8, 0, a_shape)
    wt = TensorRef(Space.WGT, DType.INT8, 0, w_shape)
    acc = TensorRef(Space.ACC, DType.INT32, 0, o_shape)
    out_addr = (sram_tensor_bytes(*a_shape, DType.INT8) + 15) // 16 * 16
    out = TensorRef(Space.ACT, DType.INT8, out_addr, o_shape)
    in_bytes = math.prod(a_shape)
    p = Program()
    p.emit("dma.load", dst=a, src=DramRef.dense(Region.IO, 0, a_shape, 1))
    p.emit("dma.load", "push_next", dst=wt, src=DramRef.dense(Region.CONST, 0, w_shape, 1))
    mac = {"gemm": "gemm", "conv": "conv2d", "dw": "dwconv2d"}[kind]
    extra = {} if kind == "gemm" else {"stride_h": stride, "stride_w": stride}
    p.emit(mac, "pop_prev", a=a, w=wt, o=acc, a_offset=A_ZP, **extra)
    p.emit("vrequant", "push_next", a=acc, o=out, mult=MULT, shift=SHIFT, o_offset=O_ZP, act_min=-128, act_max=127)
    p.emit("dma.store", "pop_prev", src=out, dst=DramRef.dense(Region.IO, in_bytes, o_shape, 1))
    p.emit("end")
    return p.encode(), a_shape, w_shape, o_shape


def numpy_layer(kind, x, wt, stride, o_shape):
    """int8 x int8 -> int32 with numpy (integer matmul, no BLAS), then the same requantisation."""
    xa = x.astype(np.int32) + A_ZP
    if kind == "gemm":
        acc = xa.reshape(x.shape[2], x.shape[3]) @ wt.reshape(wt.shape[2], wt.shape[3]).astype(np.int32)
    else:
        kh, kw = wt.shape[:2]
        _, oh, ow, cout = o_shape
        acc = np.zeros((oh, ow, cout), np.int32)
        for ky in range(kh):
            for kx in range(kw):
                patch = xa[0, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride, :]
                if kind == "conv":
                    acc += patch @ wt[ky, kx].astype(np.int32)
                else:
                    acc += patch * wt[ky, kx, 0].astype(np.int32)
    y = np.clip(_mbqm(acc, MULT, SHIFT) + O_ZP, -128, 127).astype(np.int8)
    return y.reshape(o_shape)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    ap.add_argument("--quick", action="store_true", help="three cases only")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()

    emu = npu_emulator.Emulator(BENCH_CONFIG)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'case':36s} {'MMAC':>8s} {'emu ms':>9s} {'emu GMAC/s':>11s} {'numpy ms':>9s} "
          f"{'numpy GMAC/s':>13s} {'emu/numpy':>9s}  exact")
    for name, kind, n, h, w, cin, cout, k, stride in CASES:
        if args.quick and name not in QUICK:
            continue
        prog, a_shape, w_shape, o_shape = build(kind, n, h, w, cin, cout, k, stride)
        x = rng.integers(-128, 128, a_shape, dtype=np.int8)
        wt = rng.integers(-127, 128, w_shape, dtype=np.int8)
        io = np.zeros(x.size + math.prod(o_shape), np.uint8)
        io[:x.size] = x.view(np.uint8).reshape(-1)
        const = wt.tobytes()
        emu_t, res = math.inf, None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = emu.run(prog, const=const, io=io)
            emu_t = min(emu_t, time.perf_counter() - t0)
        np_t, ref = math.inf, None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ref = numpy_layer(kind, x, wt, stride, o_shape)
            np_t = min(np_t, time.perf_counter() - t0)
        got = res.io[x.size:].view(np.int8).reshape(o_shape)
        macs = res.counters.macs
        exact = bool(np.array_equal(got, ref))
        row = {"case": name, "macs": macs, "emulator_s": emu_t, "emulator_gmacs": macs / emu_t / 1e9,
               "numpy_s": np_t, "numpy_gmacs": macs / np_t / 1e9, "ratio": np_t / emu_t, "exact": exact,
               "npu_edge_cycles": res.counters.cycles}
        rows.append(row)
        print(f"{name:36s} {macs / 1e6:8.1f} {emu_t * 1e3:9.2f} {row['emulator_gmacs']:11.2f} {np_t * 1e3:9.2f} "
              f"{row['numpy_gmacs']:13.2f} {row['ratio']:9.2f}  {'yes' if exact else 'NO'}")
    total_macs = sum(r["macs"] for r in rows)
    emu_total = sum(r["emulator_s"] for r in rows)
    np_total = sum(r["numpy_s"] for r in rows)
    print(f"{'total':36s} {total_macs / 1e6:8.1f} {emu_total * 1e3:9.2f} {total_macs / emu_total / 1e9:11.2f} "
          f"{np_total * 1e3:9.2f} {total_macs / np_total / 1e9:13.2f} {np_total / emu_total:9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": BENCH_CONFIG.to_dict(), "cases": rows,
                       "total_gmacs": total_macs / emu_total / 1e9}, f, indent=2)
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
