"""The compiler driver: what happens to a model, as the list of its stages.

For a model (`partition_for_npu`, called by the `tvm.compile` pipeline hook in target.py):

    prepare  -> fuse (can run) -> codegen (per NPU function) -> decide (should run) -> package

A function whose code generation fails, or an operator inside it, goes back to the CPU with the
reason and the model is fused again without it: one failure never sends the whole model to the CPU.
Should-run needs the predicted cycles of the compiled programs, so it comes after code generation;
operators it vetoes are fused again as CPU operators once.

For one NPU function (`compile_function`):

    describe -> plan memory -> per operator (plan tiles -> schedule -> walk -> lower) -> tokens
    -> validate (isa.validate) -> package (Artifact)

No stage imports a later one; data passes as arguments and return values. The hardware is the one
frozen NPUConfig and the compiler's behaviour the one CompileOptions, both passed to every stage.
"""

from __future__ import annotations

import dataclasses
import gc
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tvm
from tvm import relax
from tvm_ffi.structural import structural_hash

from .artifact import Artifact, ProvenanceRange
from .config import NPUConfig
from .ir.desc import FunctionDesc, FunctionOp, Unsupported
from .ir.geometry import macs_of
from .ir.memory import storage_dtype
from .ir.plan import MacPlan, Refusal, TilePlan
from .ir.registry import lookup
from .isa import validate
from .library import with_golden
from .lowering import Lowerer, plan_and_lower
from .lowering.dram import MemoryPlan, plan_memory
from .lowering.memory import ConstPool, DramTensor
from .options import CompileOptions, current_options
from .progress import report as report_progress
from .relay_ext import partition as P
from .relay_ext import patterns as pt
from .relay_ext.functions import describe_function
from .relay_ext.should_run import decide
from .report import REPORT_META_KEY, OperatorPlacement, OpRecord, PartitionReport, remember
from .tiling import mac_cost, vector_cost
from .tiling import plan as tile_plan
from .tuning.records import TunedPlans, current_database, database_identity, observe, tuned_plans
from .version import __version__

MAX_ROUNDS = 8  # fusions per model: each round sends at least one failing operator back to the CPU


class OperatorError(Exception):
    """Code generation of one operator of an NPU function failed (`index`: its position)."""

    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index = index
        self.reason = reason


@dataclasses.dataclass
class CompiledFunction:
    artifact: Artifact
    records: List[OpRecord]


# ---- one NPU function ------------------------------------------------------------------------------

def compile_function(fn: relax.Function, symbol: str, config: NPUConfig, options: Optional[CompileOptions] = None,
                     labels: Optional[Sequence[str]] = None,
                     on_operator: Optional[Callable[[int, int], None]] = None) -> CompiledFunction:
    """Compiles one partitioned NPU function; `labels`: per composite, the user's operators it covers;
    `on_operator(i, n)` after operator i of n is lowered (progress)."""
    options = options or CompileOptions()
    collecting = gc.isenabled()
    gc.disable()  # hundreds of thousands of live instruction objects: the cyclic GC would rescan them repeatedly
    try:
        return _compile_function(fn, symbol, config, options, labels, on_operator)
    finally:
        if collecting:
            gc.enable()


def _compile_function(fn, symbol, config, options, labels, on_operator=None) -> CompiledFunction:
    fd = describe_function(fn)                                               # describe
    memory = plan_memory(fd)                                                 # plan memory
    low = Lowerer(config, ConstPool(), options.double_buffer)
    tuned = tuned_plans(config, options.double_buffer)  # the current tuning database's plans, if any
    records = []
    for i in range(len(fd.ops)):                                             # per operator:
        records.append(_lower_operator(low, fd, i, memory, config, options, labels, tuned, symbol))
        if on_operator is not None:
            on_operator(i, len(fd.ops))
    low.program.emit("end")                                                  # tokens: emitted per operator
    art = _package(config, symbol, low.program.encode(), low, memory, records, options)   # package
    if options.verify:                                                       # validate
        validate(art.program, config, const_bytes=len(art.constants), io_bytes=art.io_bytes,
                 scratch_bytes=art.scratch_bytes)
    return CompiledFunction(art, records)


def _lower_operator(low: Lowerer, fd: FunctionDesc, index: int, memory: MemoryPlan, config: NPUConfig,
                    options: CompileOptions, labels: Optional[Sequence[str]], tuned: Optional[TunedPlans] = None,
                    symbol: str = "") -> OpRecord:
    """plan tiles -> schedule -> walk -> lower, for one operator; failures name the operator. A plan
    comes from the user's override, else the current tuning database (checked by the tiling stage
    like an override; a refused record falls back to the default with the reason), else the default."""
    op = fd.ops[index]
    label = labels[index] if labels is not None and index < len(labels) and labels[index] else op.name
    start = len(low.program)
    if op.result in memory.aliases:  # a reshape the memory plan made an alias of its input: nothing to move
        return OpRecord(op.desc.composite, label, op.desc.sources, op.desc.kind, None, 0, (start, start), 0, 0, 0,
                        op.desc.integer)
    try:
        ins = _operands(low.consts, op, memory)
        out = memory.values[op.result]
        observe(symbol, label, op.desc, [t.dtype for t in ins])  # task extraction (records.collecting), else nothing
        override = options.plan_override(label)
        source, note, default_cycles = ("override" if override is not None else "default"), "", None
        if override is None and tuned is not None:
            override, note = _database_plan(tuned, op.desc, ins, config, options)
            if override is not None:  # the default's predicted cycles, for the report
                source, default_cycles = "database", _default_cycles(op.desc, ins, config, options)
        plan = plan_and_lower(low, op.desc, ins, out, options, override)  # plan tiles ->
        #                                                                    schedule -> walk -> lower
    except Unsupported as e:
        raise OperatorError(index, f"{op.desc.composite} ({label}): {e}") from None
    traffic = sum(t.nbytes for t in ins) + out.nbytes
    return OpRecord(op.desc.composite, label, op.desc.sources, op.desc.kind, plan, macs_of(op.desc),
                    (start, len(low.program)), low.estimates[-1], traffic, out.nbytes // out.itemsize,
                    op.desc.integer, source, {"database": default_cycles, "default": low.estimates[-1]}.get(source), note)


def _default_cycles(desc, ins: List[DramTensor], config: NPUConfig, options: CompileOptions) -> Optional[int]:
    """The default plan's predicted cycles, None if it has none: the tiling stage's analytic estimate
    (tiling/mac_cost.py, tiling/vector_cost.py: exactly the performance model's cycles of the lowered
    plan), so the operator is not lowered a second time."""
    dtypes = [t.dtype for t in ins]
    default = tile_plan(desc, config, options, dtypes)
    if isinstance(default, Refusal):
        return None
    if isinstance(default, MacPlan):
        return mac_cost.estimate(desc, default, config)
    return vector_cost.estimate(desc, default, config, dtypes)


def _database_plan(tuned: TunedPlans, desc, ins: List[DramTensor], config: NPUConfig,
                   options: CompileOptions) -> Tuple[Optional[TilePlan], str]:
    """(the tuning database's plan for the operator, or None; why a record was not used)."""
    plan, _ = tuned.lookup(desc, [t.dtype for t in ins])
    if plan is None:
        return None, ""
    checked = tile_plan(desc, config, options, [t.dtype for t in ins], override=plan)
    if isinstance(checked, Refusal):
        return None, f"tuning record refused, default plan used: {checked.reason}"
    return plan, ""


def _operands(consts: ConstPool, op: FunctionOp, memory: MemoryPlan) -> List[DramTensor]:
    """The operator's inputs in DRAM: function values where the memory plan put them, its own
    constants placed in CONST now (in operator order)."""
    ins = []
    for value, t in zip(op.operands, op.desc.inputs):
        if t.is_const:
            ins.append(consts.tensor(t.const, storage_dtype(op.desc, t)))
        elif value not in memory.values:
            raise Unsupported(f"an operand of {op.desc.composite} is not a function input or earlier result")
        else:
            ins.append(memory.values[value])
    return ins


def _package(config: NPUConfig, symbol: str, program: bytes, low: Lowerer, memory: MemoryPlan,
             records: List[OpRecord], options: CompileOptions) -> Artifact:
    emitted = [r for r in records if r.instr_range[1] > r.instr_range[0]]  # aliased reshapes emit nothing
    provenance = [ProvenanceRange(r.instr_range[0], r.instr_range[1], r.composite,
                                  f"{' + '.join(r.sources)}: {r.binding}") for r in emitted]
    return Artifact(config, program, bytes(low.consts.data), memory.io, memory.scratch_bytes, provenance,
                    {"tvm_npu": __version__, "symbol": symbol, "fp16_overflow": options.fp16_overflow,
                     "transposing_dma": low.stats["transposing_dma"],
                     "steps": low.stats["steps"], "layers": [r.to_dict(config) for r in emitted],
                     "aliases": [r.binding for r in records if r.instr_range[1] == r.instr_range[0]]})


# ---- a model --------------------------------------------------------------------------------------

def partition_for_npu(mod: tvm.IRModule, config: NPUConfig, options: Optional[CompileOptions] = None) -> tvm.IRModule:
    """Offloads what the NPU can and should run; everything else is left for the CPU pipeline. If
    TVM's partitioning passes cannot take the module at all (some control flow, data-dependent
    shapes), the whole module stays on the CPU and the report says why: never a failed compile."""
    if mod.attrs is not None and "external_mods" in mod.attrs:
        return mod  # already partitioned (MergeCompositeFunctions cannot run twice)
    options = options or current_options()
    try:
        part, report = compile_model(mod, config, options)
    except Exception as e:  # noqa: BLE001 - TVM passes raise many types; the CPU path always works
        reason = f"partitioning failed, the whole model runs on the CPU: {type(e).__name__}: " + \
            (str(e).strip().splitlines() or [""])[-1][:300]
        remember(PartitionReport(config.name, [OperatorPlacement(v.name, op, "cpu", reasons=[reason])
                                               for v, op in P.safe_main_calls(mod)], {}, [], options.to_dict()))
        return mod
    remember(report)
    return part


def compile_model(mod: tvm.IRModule, config: NPUConfig, options: CompileOptions) -> Tuple[tvm.IRModule, PartitionReport]:
    """The model driver: (partitioned module with the NPU runtime module, report)."""
    report_progress("preparing")
    early = P.prepare(mod)                                                   # prepare
    state = pt.PartitionState(config, options)
    report_progress("partitioning")
    folded, fused = P.fuse(early, state)                                     # fuse (can run)
    integer_fused = any(lookup(name).integer for name, _ in state.groups)
    cache: Dict[tuple, CompiledFunction] = {}
    functions: Optional[Dict[str, Dict[str, Any]]] = None
    vetoed: Dict[Any, str] = {}
    early_origin = P.origins(early)
    early_label = P.labels(early, early_origin)
    for _ in range(MAX_ROUNDS):
        order = {v: i for i, (v, _) in enumerate(P.main_calls(folded))}
        folded_origin = P.origins(folded)
        label = {**early_label, **P.labels(folded, folded_origin)}
        origin = {**early_origin, **folded_origin}
        compiled, failed = _codegen(fused, state, config, options, order, origin, cache)   # codegen
        if not failed and functions is None:                                 # decide (should run), once
            functions = _decide(fused, compiled, state, config, options, label)
            if options.should_run:
                vetoed = {v: "kept on the CPU by the performance model (see the should-run decision)"
                          for f in functions.values() if not f["offloaded"] for v in f.pop("_vars")}
            refuse = vetoed
        else:
            refuse = failed
        for f in (functions or {}).values():
            f.pop("_vars", None)
        if not refuse:
            break
        state = state.again(refuse)
        if integer_fused:  # integer composites were fused before folding: fuse again from there
            folded, fused = P.fuse(early, state)
        else:
            fused = P.fuse_float(folded, state)
    else:
        raise Unsupported(f"code generation kept failing after {MAX_ROUNDS} rounds")
    report = PartitionReport(config.name, P.placements(early, folded, fused, state, label), functions or {},
                             sorted(label.get(v, str(v)) for v in vetoed), options.to_dict(),
                             _unused_overrides(options, compiled))
    symbols = [s for s, _ in P.npu_functions(fused)]
    if not symbols:
        return mod, report  # nothing to offload: the CPU pipeline gets the user's module exactly as it was
    artifacts = {}
    for i, s in enumerate(sorted(symbols)):
        art = compiled[s].artifact
        if i == 0:  # the report travels with the compiled module (tvm_npu.report_of)
            art = dataclasses.replace(art, producer={**art.producer, REPORT_META_KEY: report.to_dict()})
        if options.golden:  # seeded random inputs and the emulator's outputs, for `tvm-npu verify`
            art = with_golden(art)
        artifacts[s] = art.serialize()
    report_progress("packaging; then the CPU part (llvm)")
    return P.package(fused, config.to_json(), artifacts), report             # package


def _codegen(fused, state, config, options, order, origin, cache) -> Tuple[Dict[str, CompiledFunction], Dict[Any, str]]:
    """Compiles every NPU function; failures map back to the user's operators they cover."""
    compiled, failed = {}, {}
    covered, roots = P.function_vars(fused, state), P.function_roots(fused, state)
    functions = list(P.npu_functions(fused))
    total = sum(len(covered.get(s, [])) for s, _ in functions)  # the user's operators, as the report counts
    done = 0
    for symbol, fn in functions:
        here = len(covered.get(symbol, []))
        base = done
        tick = (lambda i, n, base=base, here=here, symbol=symbol:  # noqa: E731 - operator i of n lowered
                report_progress(f"lowering {symbol}", base + here * (i + 1) // max(n, 1), total))
        report_progress(f"lowering {symbol}", done, total)
        done += here
        cov = covered.get(symbol, [])
        labels = P.composite_sources(fn, cov, order, origin)
        # a later round renumbers the merged functions: the program does not depend on the symbol
        key = (structural_hash(fn.without_attr("global_symbol")), tuple(labels),
               database_identity(current_database()))  # plans may come from the tuning database
        try:
            if key not in cache:
                cache[key] = compile_function(fn, symbol, config, options, labels, on_operator=tick)
            hit = cache[key]
            if hit.artifact.producer.get("symbol") != symbol:
                hit = CompiledFunction(dataclasses.replace(hit.artifact, producer={**hit.artifact.producer,
                                                                                    "symbol": symbol}), hit.records)
            compiled[symbol] = hit
        except OperatorError as e:  # its root operator goes back: what it was fused with may still offload
            root = roots[symbol][e.index] if e.index < len(roots[symbol]) else None
            culprits = [root] if root is not None else [v for v, _ in cov]
            failed.update({v: f"code generation failed: {e.reason}" for v in culprits})
        except Unsupported as e:  # not attributable to one operator: the whole function goes back
            failed.update({v: f"code generation of its NPU function failed: {e}" for v, _ in cov})
    return compiled, failed


def _unused_overrides(options: CompileOptions, compiled: Dict[str, CompiledFunction]) -> List[str]:
    """Plan overrides whose label names no operator compiled for the NPU (a typo, or an operator that
    stayed on the CPU): said in the report rather than ignored."""
    labels = {r.binding for c in compiled.values() for r in c.records}
    return [f"plan override {name!r} matches no NPU operator (the report's labels name them, e.g. "
            f"{sorted(labels)[:3]})" for name, _ in options.plan_overrides if name not in labels]


def _decide(fused, compiled, state, config, options, label) -> Dict[str, Dict[str, Any]]:
    covered = P.function_vars(fused, state)
    sites = P.call_sites(fused)
    functions = {}
    for symbol, fn in P.npu_functions(fused):
        cov = covered.get(symbol, [])
        f = decide(fn, compiled[symbol].records, config, options.cpu, [label.get(v, v.name) for v, _ in cov])
        f["_vars"] = [v for v, _ in cov]
        f["places"] = sites.get(symbol, 1)  # identical regions share one function, called at each place
        if not options.should_run:
            f["offloaded"] = True
        functions[symbol] = f
    return functions
