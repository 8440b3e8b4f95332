"""Partitioning a Relax module for the NPU, as stage functions the driver (tvm_npu/driver.py) calls:
`prepare` (inference simplifications, quantised regions made self-contained, lookup tables),
`fuse` (the npu.* pattern table with its can-run checks, then MergeCompositeFunctions), the
bookkeeping that maps merged functions back to the user's operators, `placements` (where every
operator ran and why) and `package` (RunCodegen into the NPU runtime module).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import tvm
from tvm import relax

from ..ir.registry import find
from ..provenance import source_name
from ..report import OperatorPlacement
from . import patterns as pt
from .codegen import CODEGEN_ARTIFACTS_KEY, CODEGEN_CONFIG_KEY
from .fold import FoldWithNumpy
from .ops import Constant
from .lut import LUT_ATTR, FoldQuantizedLUTs, SplitSharedDequantize
from .fold_affine import FoldAffineIntoConv, FoldInputAffineIntoConv
from .rewrites import (REFUSALS_ATTR, ConvTransposeToConv, ElementwiseTIRToRelax, FoldPadIntoConv, ResizeToLayout,
                       SoftmaxFromParts, SplitReductions, SplitToSlices, UnflattenPrelu)


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


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Inference simplifications before matching: batch norms folded into the preceding convolution
    (or decomposed into a scale and shift), splits into slices, zero pads into convolutions, TFLite's
    flattened PReLUs back on the 4-D tensor, reductions over non-adjacent axes into one per run."""
    return tvm.transform.Sequential([
        ElementwiseTIRToRelax(),  # ONNX Clip with bound inputs arrives as call_tir(maximum/minimum)
        SplitToSlices(),  # each part of a split one strided slice (a layout operator the NPU runs)
        SoftmaxFromParts(),  # written-out softmax / log-softmax -> the operators (row max before fp16)
        ConvTransposeToConv(),  # transposed convolutions -> conv2d + depth-to-space + crop (relay_ext/resample.py)
        ResizeToLayout(),  # nearest resizes -> slices / stride-0 broadcasts; bilinear x2 -> depthwise conv + d2s
        FoldPadIntoConv(),  # zero pads become the convolution's DMA halo
        UnflattenPrelu(),  # TFLite's PRELU (x flattened, alpha tiled) back on x with a per-channel slope
        SplitReductions(),  # sum / max / min over non-adjacent axes: one reduction per run of adjacent axes
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        FoldInputAffineIntoConv(),  # ... and those feeding an unpadded convolution, into its weights and a bias
        FoldAffineIntoConv(),  # constant scale / shift chains after a convolution into its weights and bias
        SplitSharedDequantize,  # one dequantize per consumer: self-contained quantised regions
        FoldQuantizedLUTs,  # quantised functions of one int8 tensor -> 256-entry tables (relay_ext/lut.py)
    ])(mod)


def _quant_fuse(mod: tvm.IRModule) -> tvm.IRModule:
    """Integer composites, matched before constant folding (which would dequantise their weights).
    A module without integer tensors has none to match: the pass is skipped."""
    if not _has_integer_tensors(mod):
        return mod
    return relax.transform.FuseOpsByPattern(pt.quant_patterns(), bind_constants=True, annotate_codegen=False)(mod)


_INTEGER_DTYPES = {"int8", "uint8", "int16"}


def _has_integer_tensors(mod: tvm.IRModule) -> bool:
    """Whether main computes an 8- or 16-bit integer tensor (every integer composite produces one)."""
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            ty = b.var.ty
            if isinstance(ty, relax.TensorType) and str(ty.dtype) in _INTEGER_DTYPES:
                return True
    return False


def _prepare_late(mod: tvm.IRModule) -> tvm.IRModule:
    """Constants folded (outside composites), so weight transposes, bias reshapes and folded
    batch-norm parameters become plain constants the float patterns can take. TVM's FoldConstant
    runs only when a call with constant operands is left (it costs about 0.3 s on a 400-operator
    model even when it finds nothing)."""
    mod = _outside_composites(FoldWithNumpy())(mod)  # most of what the passes above leave, without JIT
    if _foldable(mod):
        mod = _outside_composites(relax.transform.FoldConstant())(mod)
    return relax.transform.CanonicalizeBindings()(mod)


def _foldable(mod: tvm.IRModule) -> bool:
    """Whether some call outside the composites has only constant operands (what FoldConstant folds)."""
    def const(e, bound) -> bool:
        if isinstance(e, relax.Tuple):
            return all(const(f, bound) for f in e.fields)
        if isinstance(e, relax.Var):
            return e in bound
        return isinstance(e, (Constant, relax.ShapeExpr, tvm.ir.GlobalVar)) or type(e).__name__ in (
            "PrimValue", "StringImm", "DataTypeImm", "IntImm", "FloatImm")

    for fn in mod.functions.values():
        if not isinstance(fn, relax.Function) or (fn.attrs is not None and "Composite" in fn.attrs):
            continue
        bound = set()
        for block in fn.body.blocks:
            for b in block.bindings:
                v = getattr(b, "value", None)
                if isinstance(v, Constant):
                    bound.add(b.var)
                elif isinstance(v, relax.Call) and v.args and all(const(a, bound) for a in v.args):
                    return True
    return False


def _fuse_float(mod: tvm.IRModule) -> tvm.IRModule:
    fused = relax.transform.FuseOpsByPattern(pt.patterns(), bind_constants=True, annotate_codegen=False)(mod)
    if not any(isinstance(f, relax.Function) and f.attrs is not None and "Composite" in f.attrs
               for f in fused.functions.values()):
        return mod  # nothing matched: MergeCompositeFunctions has nothing to do (and fails on some IR)
    return relax.transform.MergeCompositeFunctions()(fused)


def _npu_functions(mod: tvm.IRModule):
    for gv, fn in mod.functions.items():
        if isinstance(fn, relax.Function) and fn.attrs is not None and fn.attrs.get("Codegen") == "npu":
            yield str(fn.attrs["global_symbol"]), fn


def io_elems(fn: relax.Function) -> int:
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


def function_vars(fused: tvm.IRModule, state: pt.PartitionState) -> Dict[str, List[tuple]]:
    """symbol -> [(main Var, pattern)] it covers. Composite bodies rename their bindings, so the
    accepted matches are assigned to the composites in order (same pattern, same size, no overlap)."""
    return {symbol: [(v, name) for v, name, _ in cov] for symbol, cov in _covered(fused, state).items()}


def function_roots(fused: tvm.IRModule, state: pt.PartitionState) -> Dict[str, List[Any]]:
    """symbol -> per composite call, the main-function binding its pattern's root matched."""
    out, covered = {}, _covered(fused, state)
    for symbol, fn in _npu_functions(fused):
        cov, i, roots = covered.get(symbol, []), 0, []
        for _, n_calls in _composites(fn):
            roots.append(cov[i][2] if i < len(cov) else None)
            i += n_calls
        out[symbol] = roots
    return out


def call_sites(mod: tvm.IRModule) -> Dict[str, int]:
    """symbol -> how many times main calls the NPU function (structurally identical regions are one
    function called at each of their places)."""
    name_of = {gv: str(fn.attrs["global_symbol"]) for gv, fn in mod.functions.items()
               if isinstance(fn, relax.Function) and fn.attrs is not None and fn.attrs.get("Codegen") == "npu"}
    sites: Dict[str, int] = {}
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.GlobalVar) and v.op in name_of:
                sites[name_of[v.op]] = sites.get(name_of[v.op], 0) + 1
    return sites


def _covered(fused: tvm.IRModule, state: pt.PartitionState) -> Dict[str, List[tuple]]:
    """symbol -> [(main Var, pattern, root)] of every place the function is called (in order: the first
    place's composites first)."""
    # accepted matches by (pattern, size), in the order the checks saw them; each is used once
    pending: Dict[tuple, List[tuple]] = {}
    for (gname, group), root in zip(state.groups, state.roots):
        pending.setdefault((gname, len(group)), []).append((group, root))
    sites = call_sites(fused)
    used, out = set(), {}
    for symbol, fn in _npu_functions(fused):
        covered = []
        for _ in range(max(1, sites.get(symbol, 1))):
            for name, calls in _composites(fn):
                queue = pending.get((name, calls), [])
                for i, (group, root) in enumerate(queue):
                    if not used.intersection(group):
                        used.update(group)
                        covered += [(v, name, root) for v in group]
                        del queue[:i + 1]  # earlier entries overlap a used match: never usable again
                        break
        out[symbol] = covered
    return out


def composite_vars(fn: relax.Function, covered: List[tuple], order: Dict[Any, int]) -> List[List[Any]]:
    """Per composite call of fn, in order: the main-function bindings it covers (in model order)."""
    out, i = [], 0
    for _, n_calls in _composites(fn):
        out.append(sorted((v for v, _ in covered[i:i + n_calls]), key=lambda v: order.get(v, 0)))
        i += n_calls
    return out


def composite_sources(fn: relax.Function, covered: List[tuple], order: Dict[Any, int],
                      origin: Dict[Any, str]) -> List[str]:
    """Per composite of fn, in order: the model operators it covers (each once, in model order)."""
    out = []
    for group in composite_vars(fn, covered, order):
        names = [origin.get(v, v.name) for v in group]
        out.append(", ".join(dict.fromkeys(names)))
    return out


def calls(fn: relax.Function):
    for block in fn.body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call):
                yield b


def origins(mod: tvm.IRModule) -> Dict[Any, str]:
    """Per call binding of main, the model operator it came from: the ONNX node's name or the TFLite
    operator's type and index (tvm_npu.provenance), else the binding's name. A binding the frontend made without recording its operator (a TFLite converter's intermediate
    results) takes the operator of the bindings that use it, when they all come from one."""
    calls = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op):
                calls.append((b.var, b.value))
    origin = {v: source_name(value) for v, value in calls}
    users: Dict[Any, set] = {}
    for v, value in calls:
        for a in _vars_in(value.args):
            users.setdefault(a, set()).add(v)
    for v, _ in reversed(calls):  # consumers come later: inherit from them, last first
        if origin[v] is None:
            names = {origin.get(u) for u in users.get(v, ())}
            if len(names) == 1 and None not in names:
                origin[v] = names.pop()
    return {v: origin[v] or v.name for v, _ in calls}


def labels(mod: tvm.IRModule, origin: Optional[Dict[Any, str]] = None) -> Dict[Any, str]:
    """A unique label per call binding of main: its origin (`origins`, given or computed), with
    #index where several bindings share one."""
    names = list((origin if origin is not None else origins(mod)).items())
    count: Dict[str, int] = {}
    for _, n in names:
        count[n] = count.get(n, 0) + 1
    seen: Dict[str, int] = {}
    out = {}
    for v, n in names:
        k = seen[n] = seen.get(n, -1) + 1
        out[v] = n if count[n] == 1 or k == 0 else f"{n}#{k}"
    return out


def _vars_in(args) -> List[Any]:
    out = []
    for a in args:
        if isinstance(a, relax.Var):
            out.append(a)
        elif isinstance(a, relax.Tuple):
            out += _vars_in(a.fields)
    return out


def main_calls(mod: tvm.IRModule) -> List[tuple]:
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


def placements(early: tvm.IRModule, folded: tvm.IRModule, fused: tvm.IRModule,
                state: pt.PartitionState, label: Optional[Dict[Any, str]] = None) -> List[OperatorPlacement]:
    """Every operator of main: on the NPU when fusion moved it into an NPU function, else on the CPU
    with the reasons its checks gave (or that no pattern covers it). Operators of integer composites
    (fused before constant folding) are listed from the module before folding."""
    remaining = {var for var, _ in main_calls(fused)}
    where = {v: (name, symbol) for symbol, cov in function_vars(fused, state).items() for v, name in cov}
    label = label if label is not None else {**labels(early), **labels(folded)}  # (the driver has them)
    in_folded = {v for v, _ in main_calls(folded)}
    quant_vars = {v for name, group in state.groups if find(name).integer for v in group}
    folds = dict(early.attrs[LUT_ATTR]) if early.attrs is not None and LUT_ATTR in early.attrs else {}
    refusals = {str(k): str(v) for k, v in early.attrs[REFUSALS_ATTR].items()} if (
        early.attrs is not None and REFUSALS_ATTR in early.attrs) else {}
    calls = [(v, f"lut[{folds[v.name]}]" if op == "relax.take" and v.name in folds else op)
             for v, op in main_calls(early) if v in in_folded or v in quant_vars]
    seen = {v for v, _ in calls}
    calls += [(v, op) for v, op in main_calls(folded) if v not in seen]
    out = []
    for var, op in calls:
        if var not in remaining:
            name, symbol = where.get(var, ("", ""))
            out.append(OperatorPlacement(label[var], op, "npu", name, symbol))
            continue
        reasons = [f"{pat}: {r}" for pat, rs in state.attempts.get(var, []) for r in rs]
        if not reasons and var.name in refusals:  # an operator the rewrites (relay_ext/rewrites.py) refused
            reasons = [f"not rewritten: {refusals[var.name]}"]
        out.append(OperatorPlacement(label[var], op, "cpu", reasons=reasons or [f"no npu.* pattern covers {op}"]))
    return out


def fuse(early: tvm.IRModule, state: pt.PartitionState) -> Tuple[tvm.IRModule, tvm.IRModule]:
    """(folded, fused): integer composites matched before constant folding, then the float ones, then
    adjacent composites merged into one function per NPU region. The checks run under `state`."""
    token = pt.ACTIVE.set(state)
    try:
        folded = _prepare_late(_quant_fuse(early))
        return folded, _fuse_float(folded)
    finally:
        pt.ACTIVE.reset(token)


def fuse_float(folded: tvm.IRModule, state: pt.PartitionState) -> tvm.IRModule:
    """The float composites only, on a module whose integer composites are already fused (a later
    round of a partitioning that matched no integer composite)."""
    token = pt.ACTIVE.set(state)
    try:
        return _fuse_float(folded)
    finally:
        pt.ACTIVE.reset(token)


def npu_functions(mod: tvm.IRModule):
    """(symbol, function) of every merged NPU function."""
    yield from _npu_functions(mod)


def safe_main_calls(mod: tvm.IRModule) -> List[tuple]:
    try:
        return main_calls(mod)
    except Exception:  # noqa: BLE001 - a main without dataflow blocks: nothing to list
        return []


_RUN_CODEGEN = tvm.get_global_func("relax.transform.RunCodegen")


def package(fused: tvm.IRModule, config_json: str, artifacts: Dict[str, bytes]) -> tvm.IRModule:
    """RunCodegen hands every NPU function's compiled artifact to relax.ext.npu, which puts them into
    one runtime module; RunCodegen's copies of the weights are dropped (the artifacts carry them)."""
    # the registered pass itself: TVM 0.27's Python wrapper imports tvm.contrib.cutlass first ("enable
    # cutlass byoc registries"), about 0.3 s of every first compile in a process, for a codegen we never use
    part = _RUN_CODEGEN({"npu": {CODEGEN_CONFIG_KEY: config_json, CODEGEN_ARTIFACTS_KEY: dict(artifacts)}}, [])(fused)
    return _drop_npu_constants(part, {s for s, _ in _npu_functions(fused)})


def _drop_npu_constants(mod: tvm.IRModule, symbols) -> tvm.IRModule:
    """Our artifacts carry their own weights: drop RunCodegen's copies so they are not stored twice."""
    if mod.attrs is None or "const_name_to_constant" not in mod.attrs:
        return mod
    keep = {k: v for k, v in mod.attrs["const_name_to_constant"].items()
            if not any(str(k).startswith(s + "_") for s in symbols)}
    mod = mod.without_attr("const_name_to_constant")
    return mod.with_attr("const_name_to_constant", keep) if keep else mod
