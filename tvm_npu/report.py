"""What happened to the user's model: per lowered operator (OpRecord), per source operator
(OperatorPlacement: npu or cpu, and why), per NPU function (the should-run figures). The report is
returned by the driver, travels inside the compiled module (in its NPU artifacts' metadata, see
`report_of`), and the most recent one stays reachable as `tvm_npu.last_report()`."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

from .artifact import Artifact
from .config import NPUConfig
from .ir.plan import TilePlan
from .perf_model import roofline_cycles
from .runtime_module import find_npu_modules

REPORT_META_KEY = "partition_report"  # artifact metadata key of the report


@dataclasses.dataclass
class OpRecord:
    """One lowered operator, for reports: where its instructions are and what it was planned as."""

    composite: str
    binding: str
    sources: List[str]
    kind: str
    plan: Optional[TilePlan]
    macs: int
    instr_range: Tuple[int, int]
    predicted_cycles: int
    min_dram_bytes: int = 0  # inputs, weights and outputs each moved once (the roofline's traffic)
    vector_elems: int = 0  # one vector pass over the output
    integer: bool = False  # int8 operands: the MAC array's full rate (fp16 runs at half rate)
    plan_source: str = "default"  # where the plan came from: "default", "database" (tuning) or "override"
    default_predicted_cycles: Optional[int] = None  # the default plan's prediction (None: a user override)
    plan_note: str = ""  # e.g. why a tuning record was refused

    def roofline_cycles(self, config: NPUConfig) -> float:
        return roofline_cycles(self.macs, not self.integer, self.min_dram_bytes, self.vector_elems, config)

    def to_dict(self, config: NPUConfig) -> dict:
        return {"op": self.composite, "binding": self.binding, "sources": self.sources, "kind": self.kind,
                "plan": self.plan.to_dict() if self.plan else None, "macs": self.macs,
                "min_dram_bytes": self.min_dram_bytes, "vector_elems": self.vector_elems,
                "predicted_cycles": self.predicted_cycles, "roofline_cycles": round(self.roofline_cycles(config), 1),
                "instructions": list(self.instr_range), "plan_source": self.plan_source,
                "default_predicted_cycles": self.default_predicted_cycles,
                **({"plan_note": self.plan_note} if self.plan_note else {})}


@dataclasses.dataclass
class OperatorPlacement:
    binding: str  # the Relax binding (variable) in the original main function
    op: str  # the Relax operator
    target: str  # "npu" or "cpu"
    composite: str = ""  # npu.* pattern it is part of
    symbol: str = ""  # the NPU function it landed in
    reasons: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PartitionReport:
    config: str
    placements: List[OperatorPlacement]
    functions: Dict[str, Dict[str, Any]]  # symbol -> {ops, predicted NPU us, predicted CPU us, ...}
    vetoed: List[str]
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)  # the CompileOptions used
    notes: List[str] = dataclasses.field(default_factory=list)  # what the user asked for that did not apply

    def to_dict(self) -> Dict[str, Any]:
        return {"config": self.config, "placements": [{**vars(p), "reasons": list(p.reasons)} for p in self.placements],
                "functions": self.functions, "vetoed": self.vetoed, "options": self.options, "notes": self.notes}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PartitionReport":
        return cls(d["config"], [OperatorPlacement(**p) for p in d["placements"]], d["functions"], d["vetoed"],
                   d.get("options", {}), d.get("notes", []))

    def cpu_reasons(self) -> "OrderedDict[str, List[str]]":
        """Distinct reasons operators stayed on the CPU -> the operators each covers (first reason of each)."""
        out: "OrderedDict[str, List[str]]" = OrderedDict()
        for p in self.placements:
            if p.target == "cpu":
                out.setdefault(p.reasons[0] if p.reasons else "no reason recorded", []).append(p.binding)
        return out

    def summary(self, verbose: bool = True) -> str:
        """One line per operator (`verbose`), or one line per distinct reason an operator stayed on the CPU."""
        npu = [p for p in self.placements if p.target == "npu"]
        offloaded = sum(1 for f in self.functions.values() if f.get("offloaded", True))
        kept = len(self.functions) - offloaded
        lines = [f"NPU partitioning for {self.config}: {len(npu)} of {len(self.placements)} operators on the NPU "
                 f"in {offloaded} NPU function(s)" + (f" ({kept} candidate region(s) kept on the CPU)" if kept else "")]
        if verbose:
            for p in self.placements:
                where = f"npu  {p.composite:24s}" if p.target == "npu" else f"cpu  {'':24s}"
                why = ("  <- " + "; ".join(p.reasons[:2])) if p.target == "cpu" and p.reasons else ""
                lines.append(f"  {p.binding:>12s} = {p.op:24s} {where}{why}")
        else:
            for reason, ops in self.cpu_reasons().items():
                shown = ", ".join(ops[:6]) + (f", ... ({len(ops) - 6} more)" if len(ops) > 6 else "")
                lines.append(f"  cpu x{len(ops):<4d} {reason}\n           {shown}")
        lines += [f"  note: {n}" for n in self.notes]
        if self.functions:
            lines.append("  NPU regions (should-run: predicted NPU time incl. boundary vs predicted CPU time):")
            for symbol, f in self.functions.items():
                verdict = "offloaded" if f["offloaded"] else "kept on CPU"
                places = f" (x{f['places']} places)" if f.get("places", 1) > 1 else ""
                lines.append(f"    {len(f['operators']):3d} ops, {f['macs'] / 1e6:8.2f} M MACs, "
                             f"{f['predicted_npu_cycles']:9d} cycles: NPU {f['predicted_npu_us']:9.1f} us vs CPU "
                             f"{f['predicted_cpu_us']:9.1f} us -> {verdict}{places}")
        return "\n".join(lines)


_LAST: List[PartitionReport] = []  # the convenience of last_report(); the report also travels with the module


def remember(report: PartitionReport) -> PartitionReport:
    _LAST[:] = [report]
    return report


def last_report() -> Optional[PartitionReport]:
    """The report of the most recent partitioning in this process."""
    return _LAST[0] if _LAST else None


def report_of(module) -> Optional[PartitionReport]:
    """The report a compiled module carries (an Executable, a runtime Module or a loaded library)."""
    for m in find_npu_modules(getattr(module, "mod", module)):
        for symbol in m["npu_symbols"]():
            meta = Artifact.deserialize(bytes(m["npu_artifact"](str(symbol)))).producer
            if REPORT_META_KEY in meta:
                return PartitionReport.from_dict(meta[REPORT_META_KEY])
    return None
