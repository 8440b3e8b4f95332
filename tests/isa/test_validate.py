"""tvm_npu.isa.validate: the emulator's rules without execution; agrees with run() exactly."""

from __future__ import annotations

import numpy as np
import pytest

import npu_emulator
from tvm_npu import get_config
from tvm_npu.isa import DramRef, DType, ISAError, Program, Region, Space, TensorRef, validate


def _program(k=32, deps=True):
    a = TensorRef(Space.ACT, DType.INT8, 0, (1, 1, 16, k))
    w = TensorRef(Space.WGT, DType.INT8, 0, (1, 1, k, 16))
    o = TensorRef(Space.ACC, DType.INT32, 0, (1, 1, 16, 16))
    r = TensorRef(Space.ACT, DType.INT8, 1024, (1, 1, 16, 16))
    p = Program()
    p.emit("dma.load", dst=a, src=DramRef.dense(Region.IO, 0, (1, 1, 16, k), 1))
    p.emit("dma.load", "push_next" if deps else (), dst=w, src=DramRef.dense(Region.CONST, 0, (1, 1, k, 16), 1))
    p.emit("gemm", "pop_prev" if deps else (), a=a, w=w, o=o, a_offset=3)
    p.emit("vrequant", "push_next" if deps else (), a=o, o=r, mult=1 << 30, shift=-5, act_min=-128, act_max=127)
    p.emit("dma.store", "pop_prev" if deps else (), src=r, dst=DramRef.dense(Region.IO, 16 * k, (1, 1, 16, 16), 1))
    p.emit("end")
    return p


def test_counters_equal_a_real_run():
    cfg = get_config("npu-nano")
    prog = _program()
    checked = validate(prog, cfg, const_bytes=32 * 16, io_bytes=16 * 32 + 256)
    rng = np.random.default_rng(0)
    ran = npu_emulator.Emulator(cfg).run(prog.encode(), const=rng.integers(-127, 128, 512, dtype=np.int8).tobytes(),
                                         io=rng.integers(0, 256, 16 * 32 + 256, dtype=np.uint8))
    assert checked == ran.counters
    assert checked.cycles > 0 and checked.macs == 16 * 16 * 32


@pytest.mark.parametrize("case,message", [
    ("small_io", "outside the IO region"),
    ("sram", "instruction 1 \\(dma.load\\): operand dst: .* extends beyond the wgt SRAM"),
    ("deadlock", r"instruction 2 \(gemm\): deadlock"),
])
def test_refusals_name_the_instruction(case, message):
    cfg = get_config("npu-nano")
    io = 16 * 32 + 256
    prog = _program()
    if case == "small_io":
        io = 100
    elif case == "sram":
        prog = _program(k=4096)
        io = 16 * 4096 + 256
    elif case == "deadlock":
        prog.instrs[1] = prog.instrs[1].__class__(prog.instrs[1].opcode, prog.instrs[1].operands, 0)
    with pytest.raises(ISAError, match=message):
        validate(prog, cfg, const_bytes=32 * 16 * 128, io_bytes=io)


def test_validate_accepts_exactly_what_run_accepts_on_mutations():
    cfg = get_config("npu-nano")
    blob = bytearray(_program().encode())
    rng = np.random.default_rng(1)
    emu = npu_emulator.Emulator(cfg)
    for _ in range(300):
        b = bytearray(blob)
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(16, len(b))] = rng.integers(0, 256)
        try:
            validate(bytes(b), cfg, const_bytes=512, io_bytes=768)
            ok_v = True
        except ISAError:
            ok_v = False
        try:
            emu.run(bytes(b), const=bytes(512), io=768)
            ok_r = True
        except ValueError:
            ok_r = False
        assert ok_v == ok_r
