"""Per-run NPU profiles of a compiled model: counters, per-layer cycles against the roofline and the
performance model's prediction, and Chrome/Perfetto traces. Works on a freshly loaded library too:
everything it needs travels in the artifacts (provenance and the compiler's per-layer metadata)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional

from .errors import ProfileError
from .runtime_module import NPUProfile, find_npu_modules, set_trace

__all__ = ["enable_trace", "profile", "LayerRow", "ModelProfile"]


def enable_trace(module, enabled: bool = True) -> None:
    """Record instruction timelines on the next runs (needed for per-layer cycles and traces)."""
    for m in find_npu_modules(module):
        set_trace(m, enabled)


@dataclasses.dataclass
class LayerRow:
    symbol: str
    op: str
    source: str
    cycles: int  # emulated: first start to last end of the layer's instructions
    predicted_cycles: int  # the compiler's performance model
    roofline_cycles: float
    macs: int
    plan_source: str = "default"  # where the tile plan came from: default, database (tuning) or override
    default_predicted_cycles: Optional[int] = None  # the default plan's prediction, when the plan is not it
    plan: Optional[Dict[str, Any]] = None

    @property
    def efficiency(self) -> float:
        return self.roofline_cycles / self.cycles if self.cycles else 0.0

    @property
    def model_error(self) -> float:
        return (self.predicted_cycles - self.cycles) / self.cycles if self.cycles else 0.0


@dataclasses.dataclass
class ModelProfile:
    config: str
    clock_mhz: int
    counters: Dict[str, Dict[str, Any]]  # symbol -> counters of the last run
    layers: List[LayerRow]

    @property
    def total_cycles(self) -> int:
        return sum(int(c["cycles"]) for c in self.counters.values())

    def to_dict(self) -> Dict[str, Any]:
        return {"config": self.config, "clock_mhz": self.clock_mhz, "total_cycles": self.total_cycles,
                "counters": self.counters,
                "layers": [dict(dataclasses.asdict(r), efficiency=r.efficiency, model_error=r.model_error)
                           for r in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def table(self) -> str:
        if not self.counters:
            return "NPU profile: no NPU function in this module"
        lines = [f"NPU profile ({self.config}, {self.clock_mhz} MHz): {self.total_cycles} cycles = "
                 f"{self.total_cycles / self.clock_mhz:.1f} us in {len(self.counters)} NPU call(s)",
                 f"  {'layer':28s} {'cycles':>10s} {'predicted':>10s} {'roofline':>10s} {'eff':>6s}  "
                 f"{'plan (default plan predicted)':30s} source"]
        for r in self.layers:
            plan = r.plan_source
            if r.plan_source != "default" and r.default_predicted_cycles is not None:
                plan = f"{r.plan_source} ({r.default_predicted_cycles})"
            lines.append(f"  {r.op:28s} {r.cycles:10d} {r.predicted_cycles:10d} {r.roofline_cycles:10.0f} "
                         f"{r.efficiency:6.1%}  {plan:30s} {r.source}")
        return "\n".join(lines)


def profile(module, symbol: Optional[str] = None) -> ModelProfile:
    """The profile of the last run of every NPU symbol in `module` (an executable's `.mod`, a VM's
    `.module` or a loaded library). Per-layer rows need `enable_trace(module)` before the run.
    A module without NPU functions has an empty profile; an unknown `symbol`, or NPU functions that
    have not run yet, are a ProfileError."""
    symbols = sorted({str(s) for m in find_npu_modules(module) for s in m["npu_symbols"]()})
    if not symbols:
        return ModelProfile("", 0, {}, [])
    if symbol is not None:
        if symbol not in symbols:
            raise ProfileError(f"no NPU function {symbol!r} in this module (its NPU functions: {', '.join(symbols)})")
        symbols = [symbol]
    counters, layers, config = {}, [], None
    for sym in symbols:
        prof = NPUProfile(module, sym)
        if prof.run_count == 0:
            continue
        art = prof.artifact
        config = art.config
        counters[sym] = prof.counters.to_dict()
        meta = art.producer.get("layers", [])
        try:
            timed = prof.layers()
        except ValueError:
            timed = []  # not traced: counters only
        for i, lp in enumerate(timed):
            m = meta[i] if i < len(meta) else {}
            dflt = m.get("default_predicted_cycles")
            layers.append(LayerRow(sym, lp.op, lp.source, lp.cycles, int(m.get("predicted_cycles", 0)),
                                   float(m.get("roofline_cycles", 0.0)), int(m.get("macs", 0)),
                                   str(m.get("plan_source", "default")), None if dflt is None else int(dflt),
                                   m.get("plan")))
    if config is None:
        raise ProfileError(f"none of the module's {len(symbols)} NPU function(s) has run yet",
                           fix="run the model first (vm['main'](...)), with enable_trace(module) before it for "
                               "per-layer rows")
    return ModelProfile(config.name, config.clock_mhz, counters, layers)
