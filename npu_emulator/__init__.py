"""The NPU emulator: runs ISA v1 programs bit-exactly and counts cycles (docs/ISA.md).

The C++ core (npu_emulator/src) is compiled by ``pip install -e .`` into _lib/libnpu_emulator.so and
registers the tvm-ffi global function ``npu_emulator.execute``. This wrapper depends only on numpy,
tvm_ffi and ctypes (never on tvm or tvm_npu), so the emulator can run without the compiler.

    emu = Emulator(config)                     # NPUConfig, its JSON, or a dict
    res = emu.run(program, const=weights, io=inputs, scratch_bytes=n, trace=True)
    res.io, res.counters.cycles, res.trace     # IO region after the run, counters, [n, 4] timeline

Every malformed program, out-of-bounds access or deadlock raises ValueError naming the instruction.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import threading
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np

__all__ = ["Counters", "RunResult", "Emulator", "load_library"]

_LIB_PATH = Path(__file__).resolve().parent / "_lib" / "libnpu_emulator.so"
_lock = threading.Lock()
_execute = None


def load_library():
    """Loads the native library once and returns the ``npu_emulator.execute`` function."""
    global _execute
    with _lock:
        if _execute is None:
            if not _LIB_PATH.is_file():
                raise ImportError(f"the NPU emulator library {_LIB_PATH} is missing; build it with "
                                  "`pip install -e .` from the repository root")
            import tvm_ffi  # must be loaded before the library, which links against libtvm_ffi

            ctypes.CDLL(str(_LIB_PATH))
            _execute = tvm_ffi.get_global_func("npu_emulator.execute")
    return _execute


@dataclasses.dataclass(frozen=True)
class Counters:
    """Counters of one run. Tuples are indexed by queue (LOAD, COMPUTE, STORE), unit (DMA_LOAD,
    DMA_STORE, MAC, VECTOR, CONTROL), DRAM region (CONST, IO, SCRATCH) or SRAM (ACT, WGT, ACC)."""

    cycles: int
    instructions: int
    queue_busy: Tuple[int, int, int]
    queue_stall: Tuple[int, int, int]
    unit_busy: Tuple[int, int, int, int, int]
    macs: int
    dma_read_bytes: Tuple[int, int, int]
    dma_write_bytes: Tuple[int, int, int]
    sram_high_water: Tuple[int, int, int]
    # numeric events of the float results, per instruction that had any, in program order:
    # (instruction, values stored, overflows to inf, NaNs, nonzero values flushed to zero, the largest
    # finite |value| written as float32 bits: see fp_max_abs)
    fp_events: Tuple[Tuple[int, int, int, int, int, int], ...] = ()

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = [list(e) for e in v] if f.name == "fp_events" else list(v) if isinstance(v, tuple) else v
        return out

    @property
    def fp16_overflows(self) -> int:
        return sum(e[2] for e in self.fp_events)

    @property
    def nans(self) -> int:
        return sum(e[3] for e in self.fp_events)

    @property
    def underflows(self) -> int:
        return sum(e[4] for e in self.fp_events)

    @staticmethod
    def fp_max_abs(event) -> float:
        """The largest finite |value| an fp_events entry's instruction wrote."""
        return float(np.array([event[5]], np.uint32).view(np.float32)[0])

    @classmethod
    def _from_native(cls, m) -> "Counters":
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name == "fp_events":
                flat = [int(x) for x in m[f.name]] if f.name in m else []
                kw[f.name] = tuple(tuple(flat[i:i + 6]) for i in range(0, len(flat), 6))
                continue
            v = m[f.name]
            kw[f.name] = int(v) if isinstance(v, int) else tuple(int(x) for x in v)
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class RunResult:
    io: np.ndarray  # uint8: the IO region after the run
    counters: Counters
    trace: Optional[np.ndarray] = None  # int64 [instructions, 4]: (index, queue, start, end), program order


def _config_json(config: Any) -> str:
    if hasattr(config, "to_json"):
        return config.to_json()
    if isinstance(config, str):
        return config
    if isinstance(config, dict):
        return json.dumps(config)
    raise TypeError(f"config must be an object with .to_json(), a JSON string or a dict, not {type(config).__name__}")


def _as_bytes(data: Any, what: str) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).tobytes()
    raise TypeError(f"{what} must be bytes or a numpy array, not {type(data).__name__}")


class Emulator:
    """An NPU of one configuration. ``run`` never mutates its arguments."""

    def __init__(self, config: Union[Any, str, dict]):
        self.config_json = _config_json(config)

    def run(self, program: bytes, *, const: Union[bytes, np.ndarray] = b"",
            io: Union[None, int, bytes, np.ndarray] = None, scratch_bytes: int = 0,
            trace: bool = False) -> RunResult:
        """Runs ``program``. ``io`` is the initial IO region: bytes, an array (its raw bytes), an int
        (that many zero bytes) or None (empty); the result holds a copy after the run."""
        execute = load_library()
        if isinstance(io, (int, np.integer)) and not isinstance(io, bool):
            if io < 0:
                raise ValueError(f"io size must be >= 0, got {io}")
            io_buf = np.zeros(int(io), dtype=np.uint8)
        else:
            io_buf = np.frombuffer(_as_bytes(io, "io"), dtype=np.uint8).copy()
        if isinstance(scratch_bytes, bool) or not isinstance(scratch_bytes, (int, np.integer)):
            raise TypeError("scratch_bytes must be an int")
        result = execute(self.config_json, _as_bytes(program, "program"), _as_bytes(const, "const"), io_buf,
                         int(scratch_bytes), bool(trace))
        timeline = None
        if trace:
            timeline = np.from_dlpack(result["trace"]).astype(np.int64, copy=True).reshape(-1, 4)
        return RunResult(io=io_buf, counters=Counters._from_native(result), trace=timeline)

    def check(self, program: bytes, *, const_bytes: int = 0, io_bytes: int = 0, scratch_bytes: int = 0) -> Counters:
        """Validates ``program`` against regions of these sizes and times it, without executing it:
        the counters that do not depend on data (cycles, busy/stall, MACs, DMA bytes, SRAM high water).
        Raises ValueError naming the instruction, exactly as ``run`` would before executing anything."""
        import tvm_ffi

        load_library()
        for name, v in (("const_bytes", const_bytes), ("io_bytes", io_bytes), ("scratch_bytes", scratch_bytes)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int")
        result = tvm_ffi.get_global_func("npu_emulator.validate")(
            self.config_json, _as_bytes(program, "program"), int(const_bytes), int(io_bytes), int(scratch_bytes))
        return Counters._from_native(result)
