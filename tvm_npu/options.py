"""Compiler options: how tvm_npu compiles, kept apart from the hardware (the frozen NPUConfig).

One frozen `CompileOptions` reaches every stage as an argument. Users set it around `tvm.compile`
with the `compile_options(...)` context manager (or `--force-offload`, `--no-double-buffer`,
`--plan` on the command line); the driver reads `current_options()` once per compilation.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from .ir.plan import plan_from_dict

__all__ = ["CompileOptions", "CpuModel", "compile_options", "current_options", "load_plan_overrides"]


@dataclasses.dataclass(frozen=True)
class CpuModel:
    """The host's speed as the should-run decision assumes it (measured on the CI machine kind:
    TVM's untuned llvm build runs float convolutions at a few GFLOP/s)."""

    macs_per_s: float = 2.0e9
    elems_per_s: float = 0.5e9
    call_overhead_s: float = 20e-6  # one VM -> NPU runtime call
    convert_elems_per_s: float = 1.0e9  # fp32 <-> fp16 on the host at the boundary


FP16_OVERFLOW_POLICIES = ("warn", "error", "ignore")


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """Compiler behaviour. Every field is a decision a user (or a search) may change; none of them
    changes what the hardware is.

    should_run     False: offload everything the NPU can run, whatever the performance model predicts
    cpu            the host model of the should-run decision
    double_buffer  two SRAM slots per tile buffer (False: one, serialised load/compute/store)
    plan_overrides (operator label, tile plan) pairs: the tile plan to use for the operator whose
                   provenance label (the user's binding names, as the report shows them) matches;
                   the tiling stage checks it like any other plan and refuses it with the reason
    verify         run the stage verifiers (isa.validate on every program) between stages
    fp16_overflow  what a run does when an NPU layer's float results overflow to inf or become NaN:
                   "warn" (a tvm_npu.NumericsWarning naming the layer), "error" (the call raises
                   tvm_npu.NumericsError) or "ignore"; carried in the artifact, checked by the runtime
    golden         store golden data in every NPU artifact (seeded random inputs and the emulator's
                   outputs) for `tvm-npu verify` to replay (tvm_npu.library.with_golden)
    """

    should_run: bool = True
    cpu: CpuModel = CpuModel()
    double_buffer: bool = True
    plan_overrides: Tuple[Tuple[str, Any], ...] = ()
    verify: bool = True
    fp16_overflow: str = "warn"
    golden: bool = False

    def __post_init__(self) -> None:
        if self.fp16_overflow not in FP16_OVERFLOW_POLICIES:
            raise ValueError(f"fp16_overflow must be one of {', '.join(FP16_OVERFLOW_POLICIES)}, "
                             f"not {self.fp16_overflow!r}")
        if isinstance(self.plan_overrides, Mapping):
            object.__setattr__(self, "plan_overrides", tuple(sorted(self.plan_overrides.items())))
        if self.cpu is None:
            object.__setattr__(self, "cpu", CpuModel())

    def plan_override(self, label: str) -> Optional[Any]:
        for name, plan in self.plan_overrides:
            if name == label:
                return plan
        return None

    def to_dict(self) -> dict:
        return {"should_run": self.should_run, "cpu": dataclasses.asdict(self.cpu),
                "double_buffer": self.double_buffer, "verify": self.verify, "fp16_overflow": self.fp16_overflow,
                "golden": self.golden,
                "plan_overrides": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in self.plan_overrides}}


_OPTIONS: contextvars.ContextVar[CompileOptions] = contextvars.ContextVar("tvm_npu_options")


@contextlib.contextmanager
def compile_options(**kwargs):
    """`with tvm_npu.compile_options(should_run=False): tvm.compile(mod, target="npu")`"""
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(CompileOptions)}
    if unknown:
        raise TypeError(f"unknown compile option(s) {sorted(unknown)}; known: "
                        f"{[f.name for f in dataclasses.fields(CompileOptions)]}")
    token = _OPTIONS.set(dataclasses.replace(current_options(), **kwargs))
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def current_options() -> CompileOptions:
    return _OPTIONS.get(CompileOptions())


def load_plan_overrides(source: Union[str, Path, Mapping[str, Mapping[str, Any]]]) -> Tuple[Tuple[str, Any], ...]:
    """Plan overrides from a JSON file or dict `{label: {"rows": .., "cols": .., "depth": ..}}`
    (MAC operators; the fields of the operator's tile plan type otherwise)."""
    if not isinstance(source, Mapping):
        path = Path(source)
        try:
            source = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read plan overrides: {e}") from None
    if not isinstance(source, Mapping):
        raise ValueError("plan overrides must be a JSON object {label: {field: value}}")
    out = []
    for label, fields in source.items():
        if not isinstance(fields, Mapping):
            raise ValueError(f"plan override {label!r}: expected an object of plan fields, got {fields!r}")
        out.append((str(label), plan_from_dict(dict(fields))))
    return tuple(sorted(out, key=lambda kv: kv[0]))
