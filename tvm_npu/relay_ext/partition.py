"""Partitioning a Relax module for the NPU: can-run (pattern checks), should-run (performance
model), code generation, and the report of where every operator ran and why.

    FuseOpsByPattern(npu.*, checks) -> MergeCompositeFunctions -> [should-run veto, redo]
    -> RunCodegen (relax.ext.npu) -> drop the duplicated constants

A merged NPU function is worth offloading when its predicted NPU time plus the cost of crossing
the boundary (one call, the fp32 <-> fp16 conversion of its inputs and outputs on the host) is
below the predicted CPU time of the same operators (`CpuModel`). Vetoed operators are refused by
their checks on a second run, so they stay on the CPU (LLVM) with the reason recorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
from typing import Any, Dict, List, Optional

import tvm
from tvm import relax

from ..config import NPUConfig
from . import patterns as pt
from .lut import LUT_ATTR, FoldQuantizedLUTs, SplitSharedDequantize
from .fold import FoldWithNumpy
from .rewrites import ElementwiseTIRToRelax

_LAST_REPORT: Optional["PartitionReport"] = None
_OPTIONS: contextvars.ContextVar["CompileOptions"] = contextvars.ContextVar("tvm_npu_options")


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """Compiler behaviour (apart from the hardware, which is the NPUConfig)."""

    should_run: bool = True  # False: offload everything the NPU can run, whatever the model predicts
    cpu: "CpuModel" = None  # the host model of the should-run decision (None: CpuModel())


@contextlib.contextmanager
def compile_options(**kwargs):
    """`with tvm_npu.compile_options(should_run=False): tvm.compile(mod, target="npu")`"""
    token = _OPTIONS.set(dataclasses.replace(current_options(), **kwargs))
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def current_options() -> CompileOptions:
    return _OPTIONS.get(CompileOptions())


@dataclasses.dataclass(frozen=True)
class CpuModel:
    """The host's speed as the should-run decision assumes it (measured on the CI machine kind:
    TVM's untuned llvm build runs float convolutions at a few GFLOP/s)."""

    macs_per_s: float = 2.0e9
    elems_per_s: float = 0.5e9
    call_overhead_s: float = 20e-6  # one VM -> NPU runtime call
    convert_elems_per_s: float = 1.0e9  # fp32 <-> fp16 on the host at the boundary


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

    def to_dict(self) -> Dict[str, Any]:
        return {"config": self.config, "placements": [dataclasses.asdict(p) for p in self.placements],
                "functions": self.functions, "vetoed": self.vetoed}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def summary(self) -> str:
        npu = [p for p in self.placements if p.target == "npu"]
        lines = [f"NPU partitioning for {self.config}: {len(npu)} of {len(self.placements)} operators on the NPU "
                 f"in {len(self.functions)} function(s)"]
        for p in self.placements:
            where = f"npu  {p.composite:24s}" if p.target == "npu" else f"cpu  {'':24s}"
            why = ("  <- " + "; ".join(p.reasons[:2])) if p.target == "cpu" and p.reasons else ""
            lines.append(f"  {p.binding:>12s} = {p.op:24s} {where}{why}")
        if self.functions:
            lines.append("  NPU regions (should-run: predicted NPU time incl. boundary vs predicted CPU time):")
            for symbol, f in self.functions.items():
                verdict = "offloaded" if f["offloaded"] else "kept on CPU"
                lines.append(f"    {len(f['operators']):3d} ops, {f['macs'] / 1e6:8.2f} M MACs, "
                             f"{f['predicted_npu_cycles']:9d} cycles: NPU {f['predicted_npu_us']:9.1f} us vs CPU "
                             f"{f['predicted_cpu_us']:9.1f} us -> {verdict}")
        return "\n".join(lines)


def last_report() -> Optional[PartitionReport]:
    """The report of the most recent partitioning in this process."""
    return _LAST_REPORT


def _outside_composites(inner: tvm.transform.Pass) -> tvm.transform.Pass:
    """Runs a function-level pass on every function except composites, whose bodies must keep
    matching their patterns (constant folding would dequantise an integer composite's weights)."""
    @tvm.transform.module_pass(opt_level=0, name=f"outside_composites({inner.info.name})")
    def run(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        keep = {gv: f for gv, f in mod.functions.items()
                if isinstance(f, relax.Function) and f.attrs is not None and "Composite" in f.attrs}
        if not keep:
            return inner(mod)
        rest = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv not in keep}, attrs=mod.attrs)
        rest = inner(rest)
        for gv, f in keep.items():
            rest[gv] = f
        return rest
    return run


def _prepare_early(mod: tvm.IRModule) -> tvm.IRModule:
    """Inference simplifications before matching: batch norms folded into the preceding convolution
    (or decomposed into a scale and shift)."""
    return tvm.transform.Sequential([
        ElementwiseTIRToRelax(),  # ONNX Clip with bound inputs arrives as call_tir(maximum/minimum)
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        SplitSharedDequantize,  # one dequantize per consumer: self-contained quantised regions
        FoldQuantizedLUTs,  # quantised functions of one int8 tensor -> 256-entry tables (relay_ext/lut.py)
    ])(mod)


def _quant_fuse(mod: tvm.IRModule) -> tvm.IRModule:
    """Integer composites, matched before constant folding (which would dequantise their weights)."""
    return relax.transform.FuseOpsByPattern(pt.quant_patterns(), bind_constants=True, annotate_codegen=False)(mod)


def _prepare_late(mod: tvm.IRModule) -> tvm.IRModule:
    """Constants folded (outside composites), so weight transposes, bias reshapes and folded
    batch-norm parameters become plain constants the float patterns can take."""
    return tvm.transform.Sequential([
        _outside_composites(FoldWithNumpy()),  # most of what the passes above leave, without JIT-compiling
        _outside_composites(relax.transform.FoldConstant()),
        relax.transform.CanonicalizeBindings(),
    ])(mod)


def _fuse(mod: tvm.IRModule) -> tvm.IRModule:
    fused = relax.transform.FuseOpsByPattern(pt.patterns(), bind_constants=True, annotate_codegen=False)(mod)
    if not any(isinstance(f, relax.Function) and f.attrs is not None and "Composite" in f.attrs
               for f in fused.functions.values()):
        return mod  # nothing matched: MergeCompositeFunctions has nothing to do (and fails on some IR)
    return relax.transform.MergeCompositeFunctions()(fused)


def _npu_functions(mod: tvm.IRModule):
    for gv, fn in mod.functions.items():
        if isinstance(fn, relax.Function) and fn.attrs is not None and fn.attrs.get("Codegen") == "npu":
            yield str(fn.attrs["global_symbol"]), fn


def _io_elems(fn: relax.Function) -> int:
    n = sum(math.prod(int(v) for v in p.ty.shape.values) for p in fn.params)
    ret = fn.body.body
    outs = ret.fields if isinstance(ret, relax.Tuple) else [ret]
    return n + sum(math.prod(int(v) for v in o.ty.shape.values) for o in outs)


def _composites(fn: relax.Function):
    """(pattern name, number of operator calls) of each composite call of a merged function, in
    order. Identical composites are defined once and called several times, so calls are counted."""
    defs = {}
    for block in fn.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Function) and v.attrs is not None and "Composite" in v.attrs:
                calls = sum(isinstance(ib.value, relax.Call) for blk in v.body.blocks for ib in blk.bindings)
                defs[b.var] = (str(v.attrs["Composite"]), calls)
            elif isinstance(v, relax.Call) and isinstance(v.op, relax.Var) and v.op in defs:
                yield defs[v.op]


def _function_vars(fused: tvm.IRModule, state: pt.PartitionState) -> Dict[str, List[tuple]]:
    """symbol -> [(main Var, pattern)] it covers. Composite bodies rename their bindings, so the
    accepted matches are assigned to the composites in order (same pattern, same size, no overlap)."""
    used, out = set(), {}
    for symbol, fn in _npu_functions(fused):
        covered = []
        for name, calls in _composites(fn):
            for gname, group in state.groups:
                if gname == name and len(group) == calls and not used.intersection(group):
                    used.update(group)
                    covered += [(v, name) for v in group]
                    break
        out[symbol] = covered
    return out


def _composite_sources(fn: relax.Function, covered: List[tuple], order: Dict[Any, int],
                       label: Dict[Any, str]) -> List[str]:
    """Per composite of fn, in order: the labels of the main-function bindings it covers."""
    out, i = [], 0
    for name, calls in _composites(fn):
        group = sorted((v for v, n in covered[i:i + calls]), key=lambda v: order.get(v, 0))
        i += calls
        out.append(", ".join(label.get(v, v.name) for v in group))
    return out


def _evaluate(mod: tvm.IRModule, config: NPUConfig, cpu: CpuModel, state: pt.PartitionState, order, label):
    """Per NPU function: predicted NPU and CPU times, whether offloading pays, the operators it covers.
    The compiled artifacts are kept for RunCodegen (codegen.compile_cached)."""
    from .codegen import compile_cached

    covered = _function_vars(mod, state)
    functions = {}
    for symbol, fn in _npu_functions(mod):
        cov = covered.get(symbol, [])
        _, records = compile_cached(fn, symbol, config, _composite_sources(fn, cov, order, label))
        cycles = sum(r.predicted_cycles for r in records)
        npu_s = cycles / (config.clock_mhz * 1e6) + cpu.call_overhead_s + _io_elems(fn) / cpu.convert_elems_per_s
        macs = sum(r.macs for r in records)
        elems = sum(math.prod(int(v) for v in b.var.ty.shape.values) for b in _calls(fn))
        cpu_s = macs / cpu.macs_per_s + elems / cpu.elems_per_s
        functions[symbol] = {"operators": [r.composite for r in records], "macs": macs,
                             "covers": [label.get(v, v.name) for v, _ in cov], "_vars": [v for v, _ in cov],
                             "predicted_npu_cycles": cycles, "predicted_npu_us": round(npu_s * 1e6, 3),
                             "predicted_cpu_us": round(cpu_s * 1e6, 3), "offloaded": npu_s < cpu_s}
    return functions


def _calls(fn: relax.Function):
    for block in fn.body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call):
                yield b


def labels(mod: tvm.IRModule) -> Dict[Any, str]:
    """A unique, stable label per call binding of main: its name, or name#index when passes left the
    same name on several bindings."""
    calls = _main_calls(mod)
    count: Dict[str, int] = {}
    for v, _ in calls:
        count[v.name] = count.get(v.name, 0) + 1
    return {v: v.name if count[v.name] == 1 else f"{v.name}#{i}" for i, (v, _) in enumerate(calls)}


def _main_calls(mod: tvm.IRModule) -> List[tuple]:
    """(bound Var, operator name) of every operator call in main."""
    out = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op):
                op = v.op.name
                if op == "relax.call_tir":
                    op = f"call_tir({v.args[0].name_hint})"
                out.append((b.var, op))
    return out


def _placements(early: tvm.IRModule, folded: tvm.IRModule, fused: tvm.IRModule,
                state: pt.PartitionState) -> List[OperatorPlacement]:
    """Every operator of main: on the NPU when fusion moved it into an NPU function, else on the CPU
    with the reasons its checks gave (or that no pattern covers it). Operators of integer composites
    (fused before constant folding) are listed from the module before folding."""
    remaining = {var for var, _ in _main_calls(fused)}
    where = {v: (name, symbol) for symbol, cov in _function_vars(fused, state).items() for v, name in cov}
    label = {**labels(early), **labels(folded)}
    in_folded = {v for v, _ in _main_calls(folded)}
    quant_vars = {v for name, group in state.groups if name.startswith("npu.q") for v in group}
    folds = dict(early.attrs[LUT_ATTR]) if early.attrs is not None and LUT_ATTR in early.attrs else {}
    calls = [(v, f"lut[{folds[v.name]}]" if op == "relax.take" and v.name in folds else op)
             for v, op in _main_calls(early) if v in in_folded or v in quant_vars]
    seen = {v for v, _ in calls}
    calls += [(v, op) for v, op in _main_calls(folded) if v not in seen]
    out = []
    for var, op in calls:
        if var not in remaining:
            name, symbol = where.get(var, ("", ""))
            out.append(OperatorPlacement(label[var], op, "npu", name, symbol))
            continue
        reasons = [f"{pat}: {r}" for pat, rs in state.attempts.get(var, []) for r in rs]
        out.append(OperatorPlacement(label[var], op, "cpu", reasons=reasons or [f"no npu.* pattern covers {op}"]))
    return out


def partition_for_npu(mod: tvm.IRModule, config: NPUConfig, options: Optional[CompileOptions] = None) -> tvm.IRModule:
    """Offloads what the NPU can and should run; everything else is left for the CPU pipeline.
    If TVM's partitioning passes cannot handle the module (some control flow and data-dependent
    shapes), the whole module stays on the CPU and the report says why: never a failed compile."""
    global _LAST_REPORT
    if mod.attrs is not None and "external_mods" in mod.attrs:
        return mod  # already partitioned (MergeCompositeFunctions cannot run twice)
    try:
        return _partition(mod, config, options or current_options())
    except Exception as e:  # noqa: BLE001 - TVM passes raise many types; the CPU path always works
        reason = f"partitioning failed, the whole model runs on the CPU: {type(e).__name__}: " + \
            str(e).strip().splitlines()[-1][:300]
        _LAST_REPORT = PartitionReport(config.name, [OperatorPlacement(v.name, op, "cpu", reasons=[reason])
                                                     for v, op in _safe_main_calls(mod)], {}, [])
        return mod


def _safe_main_calls(mod: tvm.IRModule) -> List[tuple]:
    try:
        return _main_calls(mod)
    except Exception:  # noqa: BLE001 - a main without dataflow blocks: nothing to list
        return []


def _partition(mod: tvm.IRModule, config: NPUConfig, options: CompileOptions) -> tvm.IRModule:
    global _LAST_REPORT
    cpu = options.cpu or CpuModel()
    early = _prepare_early(mod)
    state = pt.PartitionState(config)
    token = pt.ACTIVE.set(state)
    try:
        folded = _prepare_late(_quant_fuse(early))
        part = _fuse(folded)
        order = {v: i for i, (v, _) in enumerate(_main_calls(folded))}
        label = labels(folded)
        functions = _evaluate(part, config, cpu, state, order, label)
        if options.should_run:
            vetoes = {v for f in functions.values() if not f["offloaded"] for v in f["_vars"]}
            if vetoes:  # redo with the vetoed operators refused by their checks
                had_quant = any(name.startswith("npu.q") for name, _ in state.groups)
                state = pt.PartitionState(config, vetoed=vetoes, quant_refused=state.quant_refused)
                pt.ACTIVE.set(state)
                if had_quant:  # integer composites were fused before folding: redo from there
                    folded = _prepare_late(_quant_fuse(early))
                part = _fuse(folded)
        else:
            for f in functions.values():
                f["offloaded"] = True
        fused = part
        if not any(True for _ in _npu_functions(fused)):
            # nothing to offload: the CPU pipeline gets the user's module exactly as it was
            for f in functions.values():
                f.pop("_vars", None)
            _LAST_REPORT = PartitionReport(config.name, _placements(early, folded, fused, state), functions,
                                           sorted(label.get(v, str(v)) for v in state.vetoed))
            return mod
        from .codegen import CODEGEN_OPTIONS_KEY, set_sources

        # provenance: the bindings of the user's main function each composite covers, by symbol
        set_sources({sym: _composite_sources(fn, cov, order, label) for (sym, fn), cov in
                     zip(_npu_functions(fused), _function_vars(fused, state).values())})

        part = relax.transform.RunCodegen({"npu": {CODEGEN_OPTIONS_KEY: config.to_json()}})(part)
        part = _drop_npu_constants(part, {s for s, _ in _npu_functions(fused)})
    finally:
        pt.ACTIVE.reset(token)
    for f in functions.values():
        f.pop("_vars", None)
    _LAST_REPORT = PartitionReport(config.name, _placements(early, folded, fused, state), functions,
                                   sorted(label.get(v, str(v)) for v in state.vetoed))
    return part



def _drop_npu_constants(mod: tvm.IRModule, symbols) -> tvm.IRModule:
    """Our artifacts carry their own weights: drop RunCodegen's copies so they are not stored twice."""
    if mod.attrs is None or "const_name_to_constant" not in mod.attrs:
        return mod
    keep = {k: v for k, v in mod.attrs["const_name_to_constant"].items()
            if not any(str(k).startswith(s + "_") for s in symbols)}
    mod = mod.without_attr("const_name_to_constant")
    return mod.with_attr("const_name_to_constant", keep) if keep else mod
