"""Python side of the TVM runtime module of kind ``npu`` (C++ in this directory).

The module is compiled into npu_emulator/_lib/libnpu_emulator.so next to the emulator, so loading
that library registers ``tvm_npu.runtime.create_module``, ``tvm_npu.runtime.save_to_bytes`` and the
loader ``ffi.Module.load_from_bytes.npu`` (needed before ``tvm.runtime.load_module`` of an exported
library that contains NPU code).

A module serves one packed function per external symbol (inputs, then outputs, as tensors) and
these helpers: ``npu_symbols()``, ``npu_artifact(sym)``, ``npu_last_counters(sym)``,
``npu_last_trace(sym)`` (flat int64 rows of (index, queue, start, end), empty unless tracing was on
for the last run), ``npu_set_trace(bool)`` and ``npu_run_count(sym)``.

This file imports neither tvm nor tvm_npu's compiler; only tvm_ffi, numpy and npu_emulator.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

__all__ = ["load_library", "create_module", "save_to_bytes", "load_from_bytes", "find_npu_modules", "set_trace",
           "NPUProfile", "LayerProfile", "NumericsError", "NumericsWarning"]


class NumericsError(FloatingPointError):
    """A run's float results overflowed to inf or became NaN on the NPU, with
    compile_options(fp16_overflow="error"): the message names the function, the layer (the user's
    operators) and the first instruction."""


class NumericsWarning(RuntimeWarning):
    """The same with fp16_overflow="warn" (the default), and results mostly flushed to zero."""


def _warn(message: str) -> None:
    import warnings

    warnings.warn(str(message), NumericsWarning, stacklevel=2)


def _register_numerics() -> None:
    """The C++ module throws NPUNumericsError and warns through tvm_npu.runtime.numerics_warning."""
    import tvm_ffi

    tvm_ffi.register_error("NPUNumericsError", NumericsError)
    tvm_ffi.register_global_func("tvm_npu.runtime.numerics_warning", _warn, override=True)


_register_numerics()


def load_library() -> None:
    """Loads the native library (once) so the npu module's global functions are registered."""
    import npu_emulator

    npu_emulator.load_library()  # the same .so holds the emulator and this runtime module


def _global(name: str):
    load_library()
    import tvm_ffi

    return tvm_ffi.get_global_func(name)


def create_module(blobs: Mapping[str, bytes]):
    """A runtime module of kind ``npu`` serving one function per symbol; each blob is an artifact
    (``tvm_npu.artifact.Artifact.serialize()``), validated here: a bad one raises ValueError."""
    return _global("tvm_npu.runtime.create_module")({str(k): bytes(v) for k, v in blobs.items()})


def save_to_bytes(module) -> bytes:
    """The module's SaveToBytes (what an exported library embeds); deterministic for an npu module."""
    return bytes(_global("tvm_npu.runtime.save_to_bytes")(module))


def load_from_bytes(data: bytes):
    """The inverse of :func:`save_to_bytes` for an npu module (``ffi.Module.load_from_bytes.npu``)."""
    return _global("ffi.Module.load_from_bytes.npu")(bytes(data))


def _as_module(obj):
    """Accepts a runtime module, or an object holding one (relax Executable ``.mod``, VM ``.module``)."""
    if hasattr(obj, "imports") and hasattr(obj, "kind"):
        return obj
    for attr in ("mod", "module"):
        inner = getattr(obj, attr, None)
        if inner is not None and hasattr(inner, "imports"):
            return inner
    raise TypeError(f"expected a runtime module (or an executable / VM holding one), got {type(obj).__name__}")


def find_npu_modules(module) -> List[Any]:
    """Every module of kind ``npu`` in the import tree of ``module`` (itself included), each once."""
    found: List[Any] = []
    seen: List[Any] = []
    stack = [_as_module(module)]
    while stack:
        m = stack.pop()
        if any(m.same_as(s) for s in seen):  # a module can be imported from several places
            continue
        seen.append(m)
        if m.kind == "npu":
            found.append(m)
        stack.extend(reversed(list(m.imports)))
    return found


def set_trace(module, enabled: bool = True) -> None:
    """Turns per-instruction tracing on or off in every npu module under ``module``."""
    for m in find_npu_modules(module):
        m["npu_set_trace"](bool(enabled))


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """One provenance range of an artifact, timed from the last traced run."""

    op: str  # the NPU composite, e.g. npu.conv2d_bias_relu
    source: str  # the source operators of the user's model
    start: int  # instruction range [start, end)
    end: int
    start_cycle: int  # first instruction start .. last instruction end
    end_cycle: int
    busy: Tuple[int, int, int]  # cycles each queue (LOAD, COMPUTE, STORE) spent on these instructions

    @property
    def cycles(self) -> int:
        return self.end_cycle - self.start_cycle


class NPUProfile:
    """Counters, per-layer timing and a Chrome trace of the last run of one NPU symbol.

    ``module`` is any module whose import tree holds the npu module (an executable's ``.mod``, a
    VM's ``.module``, a loaded library, or the npu module itself). ``symbol`` may be omitted when
    the tree holds exactly one NPU symbol. Layers and the Chrome trace need a traced run:
    ``set_trace(module)`` before running.
    """

    def __init__(self, module, symbol: Optional[str] = None):
        owners: Dict[str, Any] = {}
        for m in find_npu_modules(module):
            for s in m["npu_symbols"]():
                owners.setdefault(str(s), m)
        if symbol is None:
            if len(owners) != 1:
                raise ValueError(f"give a symbol: the module holds NPU symbols {sorted(owners)}")
            symbol = next(iter(owners))
        if symbol not in owners:
            raise ValueError(f"no NPU symbol {symbol!r}; the module holds {sorted(owners)}")
        self.symbol = symbol
        self.module = owners[symbol]
        self._artifact = None

    @property
    def artifact(self):
        """The artifact as a ``tvm_npu.artifact.Artifact`` (parsed on first use)."""
        if self._artifact is None:
            from tvm_npu.artifact import Artifact

            self._artifact = Artifact.deserialize(bytes(self.module["npu_artifact"](self.symbol)))
        return self._artifact

    @property
    def run_count(self) -> int:
        return int(self.module["npu_run_count"](self.symbol))

    @property
    def counters(self):
        """``npu_emulator.Counters`` of the last run (ValueError if the symbol has not run)."""
        from npu_emulator import Counters

        return Counters._from_native(self.module["npu_last_counters"](self.symbol))

    @property
    def trace(self) -> np.ndarray:
        """int64 [instructions, 4] of (index, queue, start, end); 0 rows if the last run was not traced."""
        return np.asarray(list(self.module["npu_last_trace"](self.symbol)), dtype=np.int64).reshape(-1, 4)

    def _traced(self) -> np.ndarray:
        rows = self.trace
        if not len(rows):
            raise ValueError(f"no trace for {self.symbol!r}: call set_trace(module) before running it")
        return rows

    def layers(self) -> List[LayerProfile]:
        rows = self._traced()
        out = []
        for p in self.artifact.provenance:
            r = rows[(rows[:, 0] >= p.start) & (rows[:, 0] < p.end)]
            busy = tuple(int((r[r[:, 1] == q, 3] - r[r[:, 1] == q, 2]).sum()) for q in range(3))
            out.append(LayerProfile(p.op, p.source, p.start, p.end, int(r[:, 2].min()), int(r[:, 3].max()), busy))
        return out

    def chrome_trace(self, clock_mhz: Optional[float] = None) -> dict:
        """Chrome / Perfetto trace events of the last traced run, instructions named by mnemonic."""
        from npu_emulator.trace import to_chrome_trace
        from tvm_npu.isa import Program

        mnemonics = [i.mnemonic for i in Program.decode(self.artifact.program)]
        return to_chrome_trace(self._traced(), mnemonics, clock_mhz)
