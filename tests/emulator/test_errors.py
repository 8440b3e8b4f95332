"""Every refusal is a ValueError naming the instruction (or the program / config), and nothing runs."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from helpers import run_program
from tvm_npu.config import PRESETS
from tvm_npu.isa import DramRef, DType, Instr, PoolMode, Program, Region, Space, TensorRef, spec

NANO = PRESETS["npu-nano"]  # ACT 64 KiB, WGT 32 KiB, ACC 16 KiB
A, W, C = Space.ACT, Space.WGT, Space.ACC
I8, I16, I32, F16, F32 = DType.INT8, DType.INT16, DType.INT32, DType.FP16, DType.FP32


def T(space, dtype, shape, addr=0):
    return TensorRef(space, dtype, addr, shape)


def dram(region=Region.IO, addr=0, strides=(0, 0, 16, 1)):
    return DramRef(region, addr, strides)


def _refused(emu, instrs, match, *, index=None, io=4096, const=b"", scratch=0, cfg=NANO):
    """The program [sync, *instrs, end] (unless instrs already ends) is refused naming the instruction."""
    prog = list(instrs)
    if not prog or prog[-1].mnemonic != "end":
        prog.append(Instr.make("end"))
    prog = [Instr.make("barrier")] + prog  # the failing instruction is never instruction 0
    if index is None:
        index = 1
    mnemonic = prog[index].mnemonic
    io_arr = np.full(io, 0x5A, np.uint8)
    with pytest.raises(ValueError, match=rf"^instruction {index} \({mnemonic}\): .*{match}") as e:
        run_program(emu, cfg, Program(prog), io=io_arr, const=const, scratch_bytes=scratch)
    return str(e.value)


def gemm(a=None, w=None, o=None, **kw):
    return Instr.make("gemm", a=a or T(A, I8, (1, 1, 16, 32)), w=w or T(W, I8, (1, 1, 32, 16)),
                      o=o or T(C, I32, (1, 1, 16, 16)), **kw)


# ---- SRAM bounds and alignment ----------------------------------------------------------------

@pytest.mark.parametrize("ins,match", [
    (Instr.make("dma.load", dst=T(A, I8, (1, 1, 1, 16), 64 * 1024), src=dram()), r"dst: .*beyond the act SRAM"),
    (Instr.make("dma.load", dst=T(A, I8, (1, 64, 64, 17)), src=dram()), r"dst: .*beyond the act SRAM"),
    (Instr.make("dma.load", dst=T(W, I8, (1, 1, 1, 16), 32 * 1024 - 0), src=dram()), r"dst: .*beyond the wgt SRAM"),
    (Instr.make("dma.load", dst=T(C, I32, (1, 1, 1, 4), 16 * 1024), src=dram()), r"dst: .*beyond the acc SRAM"),
    (Instr.make("dma.store", src=T(A, I8, (2, 1024, 1, 33)), dst=dram()), r"src: .*beyond the act SRAM"),
    (gemm(o=T(C, I32, (1, 1, 16, 16), 16 * 1024 - 16)), r"o: .*beyond the acc SRAM"),
    (Instr.make("vcvt", a=T(A, I8, (1, 1, 1, 16), 2**32 - 16), o=T(A, I8, (1, 1, 1, 16))), r"a: .*beyond"),
    (Instr.make("vlut", a=T(A, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), lut_addr=64 * 1024 - 255),
     r"lut_addr"),
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), per_channel=1,
                params_addr=16 * 1024 - 64, act_min=-128, act_max=127), r"per-channel table"),
])
def test_sram_out_of_bounds(npu_emulator, ins, match):
    _refused(npu_emulator, [ins], match)


def test_sram_bounds_depend_on_the_config(npu_emulator):
    """A tensor that fits npu-edge's ACT SRAM does not fit npu-nano's."""
    ins = Instr.make("vclamp", a=T(A, I8, (1, 1, 1, 16), 100 * 1024), o=T(A, I8, (1, 1, 1, 16)), min_i=0, max_i=1)
    run_program(npu_emulator, "npu-edge", Program([ins, Instr.make("end")]))
    _refused(npu_emulator, [ins], r"a: .*beyond the act SRAM \(65536 bytes\)")
    # and a tensor ending exactly at the end of the SRAM is fine
    last = Instr.make("vclamp", a=T(A, I8, (1, 1, 1, 16), 64 * 1024 - 16), o=T(A, I8, (1, 1, 1, 16)), min_i=0, max_i=1)
    run_program(npu_emulator, NANO, Program([last, Instr.make("end")]))


@pytest.mark.parametrize("addr", [1, 8, 15, 24])
def test_misaligned_sram_address(npu_emulator, addr):
    _refused(npu_emulator, [Instr.make("dma.load", dst=T(A, I8, (1, 1, 1, 16), addr), src=dram())],
             "not 16-byte aligned")
    _refused(npu_emulator, [gemm(w=T(W, I8, (1, 1, 32, 16), addr))], "w: .*not 16-byte aligned")


@pytest.mark.parametrize("dims", [(0, 1, 1, 16), (1, 0, 1, 16), (1, 1, 0, 16), (1, 1, 1, 0)])
def test_zero_dims(npu_emulator, dims):
    _refused(npu_emulator, [Instr.make("vcvt", a=T(A, I8, dims), o=T(A, I8, (1, 1, 1, 16)))], "zero dimension")


# ---- DRAM bounds --------------------------------------------------------------------------------

@pytest.mark.parametrize("src,io,match", [
    (dram(addr=4096 - 15), 4096, r"src: touches bytes \[4081, 4112\] outside the IO region \(4096 bytes\)"),
    (dram(strides=(0, 0, 4081, 1)), 4096, "outside the IO region"),
    (dram(addr=15, strides=(0, 0, -16, 1)), 4096, r"touches bytes \[-1, "),  # negative strides
    (dram(addr=0, strides=(0, 0, 0, -1)), 4096, "outside the IO region"),
    (dram(region=Region.CONST), 4096, r"outside the CONST region \(0 bytes\)"),
    (dram(region=Region.SCRATCH), 4096, r"outside the SCRATCH region \(0 bytes\)"),
    (dram(addr=2**32 - 1), 4096, "outside the IO region"),
    (dram(strides=(0, 0, 2**31 - 1, 1)), 4096, "outside the IO region"),
])
def test_dram_read_outside_region(npu_emulator, src, io, match):
    _refused(npu_emulator, [Instr.make("dma.load", dst=T(A, I8, (1, 1, 2, 16)), src=src)], match, io=io)


def test_dram_read_with_padding_counts_only_copied_rows(npu_emulator):
    """The halo is not read: a load whose source extent fits is fine even though the dst is larger."""
    ins = Instr.make("dma.load", dst=T(A, I8, (1, 3, 3, 16)), src=DramRef(Region.IO, 0, (0, 0, 16, 1)),
                     pad_top=1, pad_bottom=1, pad_left=1, pad_right=1)
    run_program(npu_emulator, NANO, Program([ins, Instr.make("end")]), io=16)
    _refused(npu_emulator, [ins], "outside the IO region", io=15)


@pytest.mark.parametrize("dst,match", [
    (dram(addr=4096 - 16 - 15), "outside the IO region"),
    (dram(region=Region.SCRATCH, addr=8), r"outside the SCRATCH region \(32 bytes\)"),
    (dram(addr=16, strides=(0, 0, -32, 1)), "outside the IO region"),
])
def test_dram_write_outside_region(npu_emulator, dst, match):
    _refused(npu_emulator, [Instr.make("dma.store", src=T(A, I8, (1, 1, 2, 16)), dst=dst)], match, scratch=32)


def test_store_to_const_never_changes_the_callers_constants(npu_emulator):
    const = bytes(range(32))
    prog = Program([Instr.make("dma.store", src=T(A, I8, (1, 1, 2, 16)), dst=dram(Region.CONST)), Instr.make("end")])
    run_program(npu_emulator, NANO, prog, const=const)
    assert const == bytes(range(32))


# ---- dtypes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ins,match", [
    (gemm(a=T(A, I32, (1, 1, 16, 32))), r"a: dtype i32 not accepted"),
    (gemm(a=T(A, F32, (1, 1, 16, 32))), r"a: dtype f32 not accepted"),
    (gemm(w=T(W, I16, (1, 1, 32, 16))), r"w: dtype i16 not accepted"),
    (gemm(w=T(W, F16, (1, 1, 32, 16))), r"w: dtype f16 not accepted"),
    (gemm(a=T(A, F16, (1, 1, 16, 32))), r"w: dtype i8 not accepted"),
    (gemm(o=T(C, F32, (1, 1, 16, 16))), r"o: dtype f32 not accepted"),
    (gemm(a=T(A, F16, (1, 1, 16, 32)), w=T(W, F16, (1, 1, 32, 16)), o=T(C, I32, (1, 1, 16, 16))), r"o: dtype i32"),
    (gemm(a=T(A, F16, (1, 1, 16, 32)), w=T(W, F16, (1, 1, 32, 16)), o=T(C, F32, (1, 1, 16, 16)), a_offset=1),
     "a_offset must be 0 for fp16"),
    (gemm(a=T(W, I8, (1, 1, 16, 32))), r"a: .* must be in act"),
    (gemm(w=T(A, I8, (1, 1, 32, 16))), r"w: .* must be in wgt"),
    (gemm(o=T(A, I32, (1, 1, 16, 16))), r"o: .* must be in acc"),
    (Instr.make("dma.store", src=T(C, I32, (1, 1, 1, 4)), dst=dram()), r"src: .* must be in act"),
    (Instr.make("vlut", a=T(A, I16, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16))), r"a: dtype i16 not accepted"),
    (Instr.make("vfunc", a=T(A, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16))), r"a: dtype i8 not accepted"),
    (Instr.make("vrequant", a=T(C, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16))), r"a: dtype i8 not accepted"),
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 1, 16)), o=T(A, F16, (1, 1, 1, 16))), r"o: dtype f16 not accepted"),
    (Instr.make("vrequant", a=T(C, F32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16))), r"o: dtype i8 not accepted"),
    (Instr.make("vcvt", a=T(A, I32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16))), "no conversion from i32 to i8"),
    (Instr.make("vcvt", a=T(A, F16, (1, 1, 1, 16)), o=T(A, I16, (1, 1, 1, 16))), "no conversion from f16 to i16"),
    (Instr.make("vadd", a=T(A, I8, (1, 1, 1, 16)), b=T(A, I16, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)),
                act_min=-128, act_max=127), r"b: dtype i16 not accepted"),
    (Instr.make("vadd", a=T(W, I8, (1, 1, 1, 16)), b=T(A, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)),
                act_min=-128, act_max=127), r"a: .* must be in act or acc"),
    (Instr.make("vclamp", a=T(A, I8, (1, 1, 1, 16)), o=T(A, I16, (1, 1, 1, 16))), r"o: dtype i16 not accepted"),
    (Instr.make("vpool", a=T(A, I32, (1, 2, 2, 16)), o=T(A, I32, (1, 1, 1, 16)), mode=int(PoolMode.AVG), kh=2, kw=2,
                act_min=0, act_max=1), r"a: dtype i32 not accepted"),
    (Instr.make("vreduce", a=T(A, I8, (1, 1, 2, 16)), o=T(C, I8, (1, 1, 1, 16)), mode=0, axis=2),
     r"o: dtype i8 not accepted"),
    (Instr.make("dwconv2d", a=T(A, I8, (1, 3, 3, 16)), w=T(W, I8, (3, 3, 1, 16)), o=T(C, F32, (1, 1, 1, 16))),
     r"o: dtype f32 not accepted"),
])
def test_bad_dtypes(npu_emulator, ins, match):
    _refused(npu_emulator, [ins], match)


# ---- shapes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ins,match", [
    (gemm(w=T(W, I8, (1, 1, 31, 16))), r"w has 31 rows \(K\), a has 32 columns"),
    (gemm(o=T(C, I32, (1, 1, 15, 16))), "o has 15 rows, a has 16"),
    (gemm(o=T(C, I32, (1, 1, 16, 17))), "o has 17 columns, w has 16"),
    (Instr.make("conv2d", a=T(A, I8, (1, 5, 5, 6)), w=T(W, I8, (3, 3, 3, 8)), o=T(C, I32, (1, 3, 3, 8)), groups=4),
     "groups 4 does not divide a channels 6"),
    (Instr.make("conv2d", a=T(A, I8, (1, 5, 5, 6)), w=T(W, I8, (3, 3, 6, 8)), o=T(C, I32, (1, 3, 3, 8)), groups=2),
     r"w \[KH,KW,Cin/groups,Cout\] has 6 input channels, expected 3"),
    (Instr.make("conv2d", a=T(A, I8, (1, 5, 5, 6)), w=T(W, I8, (3, 3, 6, 8)), o=T(C, I32, (1, 4, 3, 8))),
     "output h 4 needs 6 input rows"),
    (Instr.make("conv2d", a=T(A, I8, (1, 5, 5, 6)), w=T(W, I8, (3, 3, 6, 8)), o=T(C, I32, (1, 2, 2, 8)),
                dilation_w=3), "output w 2 needs 8 input columns"),
    (Instr.make("conv2d", a=T(A, I8, (1, 5, 5, 6)), w=T(W, I8, (3, 3, 6, 8)), o=T(C, I32, (1, 3, 3, 8)),
                stride_h=0), "stride_h must be at least 1"),
    (Instr.make("conv2d", a=T(A, I8, (1, 5, 5, 6)), w=T(W, I8, (3, 3, 6, 8)), o=T(C, I32, (1, 3, 3, 8)), groups=0),
     "groups must be at least 1"),
    (Instr.make("conv2d", a=T(A, I8, (1, 5, 5, 6)), w=T(W, I8, (3, 3, 6, 8)), o=T(C, I32, (1, 3, 3, 9))),
     "w has 8 output channels, o has 9"),
    (Instr.make("conv2d", a=T(A, I8, (2, 5, 5, 6)), w=T(W, I8, (3, 3, 6, 8)), o=T(C, I32, (1, 3, 3, 8))),
     "o n 1 != a n 2"),
    (Instr.make("dwconv2d", a=T(A, I8, (1, 3, 3, 16)), w=T(W, I8, (3, 3, 1, 24)), o=T(C, I32, (1, 1, 1, 24))),
     "o channels 24 are not a multiple of a channels 16"),
    (Instr.make("dwconv2d", a=T(A, I8, (1, 3, 3, 16)), w=T(W, I8, (3, 3, 2, 16)), o=T(C, I32, (1, 1, 1, 16))),
     r"w \[KH,KW,1,C\*multiplier\] has w 2, expected 1"),
    (Instr.make("vadd", a=T(A, I8, (1, 1, 3, 16)), b=T(A, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 4, 16)),
                act_min=-128, act_max=127), "a: dims of .* neither equal nor 1 against o"),
    (Instr.make("vmul", a=T(A, I8, (1, 1, 4, 16)), b=T(A, I8, (2, 1, 1, 16)), o=T(A, I8, (1, 1, 4, 16)),
                act_min=-128, act_max=127), "b: dims of .* neither equal nor 1"),
    (Instr.make("vcvt", a=T(A, I8, (1, 1, 2, 16)), o=T(C, I32, (1, 2, 1, 16))), "differ in dims"),
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 2, 16)), o=T(A, I8, (1, 1, 2, 8)), act_min=-128, act_max=127),
     "differ in dims"),
    (Instr.make("vreduce", a=T(A, I8, (1, 2, 3, 16)), o=T(A, I8, (1, 2, 1, 1)), mode=1, axis=2),
     "must have a's dims with axis 2 set to 1"),
    (Instr.make("vpool", a=T(A, I8, (1, 4, 4, 16)), o=T(A, I8, (1, 3, 2, 16)), mode=0, kh=2, kw=2, stride_h=2,
                stride_w=2, act_min=-128, act_max=127), "output row 2 has an empty window"),
    (Instr.make("vpool", a=T(A, I8, (1, 4, 4, 16)), o=T(A, I8, (1, 2, 2, 8)), mode=0, kh=2, kw=2, stride_h=2,
                stride_w=2, act_min=-128, act_max=127), "differ in n or c"),
    (Instr.make("vpool", a=T(A, I8, (1, 4, 4, 16)), o=T(A, I8, (1, 2, 2, 16)), mode=1, kh=2, kw=2, pad_top=2,
                act_min=-128, act_max=127), "padding of kh/kw or more"),
    (Instr.make("dma.load", dst=T(A, I8, (1, 3, 3, 16)), src=dram(), pad_top=2, pad_bottom=2),
     "pad_top \\+ pad_bottom exceeds dst h 3"),
])
def test_shape_mismatches(npu_emulator, ins, match):
    _refused(npu_emulator, [ins], match)


# ---- field ranges -----------------------------------------------------------------------------

@pytest.mark.parametrize("ins,match", [
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), shift=32, act_min=-128,
                act_max=127), r"shift 32 outside \[-31, 31\]"),
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), shift=-32, act_min=-128,
                act_max=127), r"shift -32 outside"),
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), act_min=-129, act_max=127),
     "outside the i8 range"),
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), act_min=5, act_max=4),
     "act_min 5 > act_max 4"),
    (Instr.make("vrequant", a=T(C, I32, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), per_channel=2, act_min=-128,
                act_max=127), "per_channel must be 0 or 1"),
    (gemm(accumulate=2), "accumulate must be 0 or 1"),
    (Instr.make("vadd", a=T(A, I8, (1, 1, 1, 16)), b=T(A, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)),
                left_shift=32, act_min=-128, act_max=127), r"left_shift 32 outside \[0, 31\]"),
    (Instr.make("vadd", a=T(A, I8, (1, 1, 1, 16)), b=T(A, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)),
                o_shift=40, act_min=-128, act_max=127), "o_shift 40 outside"),
    (Instr.make("vmax", a=T(A, I16, (1, 1, 1, 16)), b=T(A, I16, (1, 1, 1, 16)), o=T(A, I16, (1, 1, 1, 16)),
                act_min=-40000, act_max=0), "outside the i16 range"),
    (Instr.make("vclamp", a=T(A, I8, (1, 1, 1, 16)), o=T(A, I8, (1, 1, 1, 16)), min_i=0, max_i=200),
     "outside the i8 range"),
    (Instr.make("vclamp", a=T(A, F16, (1, 1, 1, 16)), o=T(A, F16, (1, 1, 1, 16)), min_f=1.0, max_f=-1.0),
     "not an ordered pair"),
    (Instr.make("vclamp", a=T(A, F16, (1, 1, 1, 16)), o=T(A, F16, (1, 1, 1, 16)), min_f=float("nan"), max_f=1.0),
     "not an ordered pair"),
    (Instr.make("vfunc", a=T(A, F16, (1, 1, 1, 16)), o=T(A, F16, (1, 1, 1, 16)), func=7), "unknown func 7"),
    (Instr.make("vpool", a=T(A, I8, (1, 2, 2, 16)), o=T(A, I8, (1, 1, 1, 16)), mode=2, kh=2, kw=2),
     "unknown pool mode 2"),
    (Instr.make("vpool", a=T(A, I8, (1, 2, 2, 16)), o=T(A, I8, (1, 1, 1, 16)), mode=0, kh=0, kw=2, act_min=0,
                act_max=1), "kh must be at least 1"),
    (Instr.make("vreduce", a=T(A, I8, (1, 1, 2, 16)), o=T(C, I32, (1, 1, 1, 16)), mode=2, axis=2),
     "unknown reduce mode 2"),
    (Instr.make("vreduce", a=T(A, I8, (1, 1, 2, 16)), o=T(C, I32, (1, 1, 1, 16)), mode=0, axis=4),
     r"axis 4 outside \[0, 3\]"),
    (Instr.make("sync", queue=3), "unknown queue 3"),
])
def test_field_ranges(npu_emulator, ins, match):
    _refused(npu_emulator, [ins], match)


def test_per_channel_shift_out_of_range_at_run_time(npu_emulator):
    """A per-channel (mult, shift) table comes from data: its shift is checked when the instruction runs."""
    table = np.array([2**30, 0, 2**30, 40], np.int32)
    a = T(C, I32, (1, 1, 1, 2))
    params = T(C, I32, (1, 1, 1, 4), 16)
    prog = [Instr.make("dma.load", "push_next", dst=params, src=DramRef(Region.CONST, 0, (0, 0, 0, 4))),
            Instr.make("vrequant", "pop_prev", a=a, o=T(A, I8, (1, 1, 1, 2)), per_channel=1, params_addr=16,
                       act_min=-128, act_max=127)]
    _refused(npu_emulator, prog, r"shift", index=2, const=table.tobytes())


# ---- enums in the encoding (the Python objects cannot hold them: patch bytes) -----------------------

def _patch(prog: Program, index: int, field: str, value: int) -> bytes:
    blob = bytearray(prog.encode())
    off = spec.PROGRAM_HEADER.size + sum(i.opcode.fmt.size for i in prog.instrs[:index]) + spec.INSTR_HEADER.size
    for name, t in prog.instrs[index].opcode.fmt.fields:
        if name == field:
            struct.pack_into("<" + spec.SCALAR_TYPES[t][0], blob, off, value)
            return bytes(blob)
        off += struct.calcsize("<" + spec.SCALAR_TYPES[t][0])
    raise KeyError(field)


@pytest.mark.parametrize("field,value,match", [
    ("dst_space", 3, "dst: unknown space 3"), ("dst_dtype", 5, "dst: unknown dtype 5"),
    ("src_region", 3, "src: unknown region 3"), ("dst_dtype", 255, "unknown dtype 255"),
])
def test_unknown_enums(npu_emulator, field, value, match):
    prog = Program([Instr.make("barrier"), Instr.make("dma.load", dst=T(A, I8, (1, 1, 1, 16)), src=dram()),
                    Instr.make("end")])
    with pytest.raises(ValueError, match=rf"^instruction 1 \(dma.load\): .*{match}"):
        npu_emulator.Emulator(NANO).run(_patch(prog, 1, field, value), io=4096)


# ---- dependency flags, end, deadlock ------------------------------------------------------------------

@pytest.mark.parametrize("ins,match", [
    (Instr.make("dma.load", "pop_prev", dst=T(A, I8, (1, 1, 1, 16)), src=dram()), "LOAD queue, which has no previous"),
    (Instr.make("dma.load", "push_prev", dst=T(A, I8, (1, 1, 1, 16)), src=dram()), "no previous queue"),
    (Instr.make("dma.store", "push_next", src=T(A, I8, (1, 1, 1, 16)), dst=dram()), "STORE queue, which has no next"),
    (Instr.make("dma.store", "pop_next", src=T(A, I8, (1, 1, 1, 16)), dst=dram()), "no next queue"),
    (Instr.make("sync", "pop_prev", queue=0), "no previous queue"),
    (Instr.make("sync", "push_next", queue=2), "no next queue"),
    (Instr.make("barrier", "push_next"), "barrier and end take no dependency flags"),
])
def test_dependency_flags_to_a_missing_queue(npu_emulator, ins, match):
    _refused(npu_emulator, [ins], match)


def test_end_with_flags(npu_emulator):
    _refused(npu_emulator, [Instr.make("end", "pop_prev")], "no dependency flags")


def test_missing_end(npu_emulator):
    prog = Program([Instr.make("barrier"), Instr.make("sync", queue=1)])
    with pytest.raises(ValueError, match=r"^instruction 1 \(sync\): the program must end with end"):
        run_program(npu_emulator, NANO, prog)
    with pytest.raises(ValueError, match=r"^program: no instructions"):
        run_program(npu_emulator, NANO, Program([]))


def test_end_not_last(npu_emulator):
    prog = Program([Instr.make("barrier"), Instr.make("end"), Instr.make("sync", queue=1), Instr.make("end")])
    with pytest.raises(ValueError, match=r"^instruction 1 \(end\): end must be the last instruction, 2 follow"):
        run_program(npu_emulator, NANO, prog)


@pytest.mark.parametrize("instrs,index,queue", [
    ([Instr.make("sync", "pop_prev", queue=1)], 1, "LOAD"),
    ([Instr.make("sync", "pop_next", queue=1)], 1, "STORE"),
    ([Instr.make("sync", "pop_next", queue=0)], 1, "COMPUTE"),
    ([Instr.make("sync", "pop_prev", queue=2)], 1, "COMPUTE"),
    # a cycle: COMPUTE waits for STORE, which waits for COMPUTE's later push
    ([Instr.make("sync", "pop_next", queue=1), Instr.make("sync", "push_next", queue=1),
      Instr.make("sync", "pop_prev,push_prev", queue=2)], 1, "STORE"),
    # one push, two pops
    ([Instr.make("sync", "push_next", queue=0), Instr.make("sync", "pop_prev", queue=1),
      Instr.make("sync", "pop_prev", queue=1)], 3, "LOAD"),
])
def test_deadlock(npu_emulator, instrs, index, queue):
    msg = _refused(npu_emulator, instrs, f"deadlock: waits for a token from the {queue} queue", index=index)
    assert "never signalled" in msg


def test_tokens_do_not_cross_a_barrier_backwards(npu_emulator):
    """A pop before a barrier cannot be satisfied by a push after it: that is a deadlock too."""
    instrs = [Instr.make("sync", "pop_prev", queue=1), Instr.make("barrier"), Instr.make("sync", "push_next", queue=0)]
    _refused(npu_emulator, instrs, "deadlock", index=1)


def test_nothing_runs_when_refused(npu_emulator):
    """Validation is up front: a bad instruction late in the program leaves the IO region untouched."""
    io = np.arange(64, dtype=np.uint8)
    prog = Program([Instr.make("dma.load", "push_next", dst=T(A, I8, (1, 1, 1, 16)), src=dram(addr=0)),
                    Instr.make("sync", "pop_prev,push_next", queue=1),
                    Instr.make("dma.store", "pop_prev", src=T(A, I8, (1, 1, 1, 16)), dst=dram(addr=16)),
                    Instr.make("vclamp", a=T(A, I8, (1, 1, 1, 16), 8), o=T(A, I8, (1, 1, 1, 16)), min_i=0, max_i=1),
                    Instr.make("end")])
    with pytest.raises(ValueError, match=r"^instruction 3 \(vclamp\)"):
        npu_emulator.Emulator(NANO).run(prog.encode(), io=io)
    np.testing.assert_array_equal(io, np.arange(64))


# ---- program format (the emulator's own decoder) ---------------------------------------------------

def _blob():
    return Program([Instr.make("barrier"), Instr.make("sync", queue=1), Instr.make("end")]).encode()


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b"NPUX" + b[4:], r"^program: bad magic"),
    (lambda b: b[:4] + struct.pack("<H", 2) + b[6:], r"^program: ISA version 2"),
    (lambda b: b[:10], r"^program: truncated"),
    (lambda b: b[:-8], r"^program: .*(truncated|header says)"),
    (lambda b: b + bytes(8), r"^program: "),
    (lambda b: b[:16] + bytes([0x7E]) + b[17:], r"^instruction 0\b.*unknown opcode"),
    (lambda b: b[:24] + bytes([0x30, 0, 16, 0]) + b[28:], r"^instruction 1 \(sync\): length field 16"),
    (lambda b: b[:24] + bytes([0x30, 0x10]) + b[26:], r"^instruction 1 \(sync\): unknown dependency flag bits"),
    (lambda b: b[:8] + struct.pack("<I", 4) + b[12:], r"^instruction \d+ "),
])
def test_program_format_errors(npu_emulator, mutate, match):
    with pytest.raises(ValueError, match=match):
        npu_emulator.Emulator(NANO).run(mutate(_blob()))


def test_bad_configs_are_refused_by_the_emulator(npu_emulator):
    end = Program([Instr.make("end")]).encode()
    d = NANO.to_dict()
    for bad, match in [({**d, "mac_rows": 0}, "mac_rows"), ({**d, "act_sram_bytes": 1000}, "multiples? of 16"),
                       ({k: v for k, v in d.items() if k != "vector_lanes"}, "missing field vector_lanes"),
                       ({**d, "warp": 1}, "unknown field"), ({**d, "vector_lanes": 2.5}, "vector_lanes")]:
        with pytest.raises(ValueError, match=f"^config: .*{match}"):
            npu_emulator.Emulator(bad).run(end)
    with pytest.raises(ValueError, match="^config: "):
        npu_emulator.Emulator("{not json").run(end)


@pytest.mark.parametrize("name", ["n", "npu-pro", "my-npu", "abcdefg", "abcdefgh", "a-much-longer-config-name"])
def test_any_config_name_is_accepted(npu_emulator, name):
    """The name is not part of the machine: every string works, whatever its length."""
    res = npu_emulator.Emulator(NANO.replace(name=name)).run(Program([Instr.make("end")]).encode())
    assert res.counters.cycles == NANO.control_cycles


def test_every_preset_runs(npu_emulator):
    for cfg in PRESETS.values():
        for form in (cfg, cfg.to_json(), cfg.to_dict()):
            res = npu_emulator.Emulator(form).run(Program([Instr.make("end")]).encode())
            assert res.counters.cycles == cfg.control_cycles, cfg.name


def test_argument_errors(npu_emulator):
    emu = npu_emulator.Emulator(NANO)
    end = Program([Instr.make("end")]).encode()
    with pytest.raises(ValueError):
        emu.run(end, io=-1)
    with pytest.raises((TypeError, ValueError)):
        emu.run(end, scratch_bytes=-5)
    with pytest.raises(TypeError):
        emu.run(end, io=1.5)
