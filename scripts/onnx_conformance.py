#!/usr/bin/env python3
"""ONNX operator conformance of the NPU compiler: every ONNX node test case on `llvm` and on `npu`.

onnx's node test cases (1,884 in onnx 1.23.2) are built in memory by
`onnx.backend.test.loader.load_node_model_tests()`. Each case is imported with
`tvm.relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)`, compiled and run

* on `llvm` (plain TVM), compared strictly: same dtype, same shape, `allclose(rtol=1e-3, atol=1e-5)`;
* on `npu` with `tvm_npu.compile_options(should_run=False)`, which offloads everything the NPU can
  run. Outputs that depend on at least one float operator placed on the NPU are compared with the
  fp16 tolerance (`|actual - expected| <= FP16_ATOL + FP16_RTOL * max|expected|`, same dtype and
  shape, NaN and inf where expected); every other output strictly, as on llvm.

The key number is the count of cases that pass on llvm but fail on npu: it must be 0 (the exit code
is 1 otherwise). Cases run in worker processes (spawned, one task per case and target) with a
per-task timeout, so a crash or hang of one case is recorded as such and the run goes on.
See docs/CONFORMANCE.md.

    python scripts/onnx_conformance.py [--cases REGEX] [--limit N] [--workers 2] [--timeout 60]
        [--json out.json] [--targets llvm,npu] [--freeze none|weights]

`--freeze weights` turns every graph input but the first into an initializer (a constant) before
import, so that convolution and matmul weights are constants and the NPU can take those operators.
The default (`none`) is the baseline method: every input of the test data stays a model input.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib
import io
import json
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

# Strict comparison (llvm, and npu outputs that no NPU operator computed).
STRICT_RTOL = 1e-3
STRICT_ATOL = 1e-5
# NPU float tolerance (docs/CONFORMANCE.md, "Tolerances"). The NPU stores float tensors in fp16
# (unit roundoff u = 2^-11 = 4.9e-4, epsilon 2^-10 = 9.8e-4), multiplies fp16 x fp16 exactly into
# fp32 and accumulates in fp32. For y = sum_k a_k w_k that bounds the error by
# (2u + K 2^-24) sum|a_k w_k| + u |y|: relative to max|y| it is 2u S/M + u, S/M = sum|a w| / max|y|
# (the cancellation ratio), and each further operator of a chain adds about u.
FP16_EPS = 2.0 ** -10
FP16_RTOL = 2e-2  # ~20 eps = 41 u of max|expected|: S/M up to ~20, or chains of ~40 roundings
FP16_ATOL = 1e-3  # ~eps = 2u: cancellation of O(1) operands (x - mean(x)) in outputs whose max is ~0

TARGETS = ("llvm", "npu")
NODE_PACKAGE = "onnx.backend.test.case.node"


# ----------------------------------------------------------------------------------------------
# Loading the cases
# ----------------------------------------------------------------------------------------------

def _to_data(x: Any) -> Any:
    """Test data as numpy arrays (TensorProto -> ndarray, numpy scalar -> 0-d array), lists kept."""
    from onnx import TensorProto, numpy_helper

    if x is None:
        return None
    if isinstance(x, TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, (list, tuple)):
        return [_to_data(v) for v in x]
    if isinstance(x, dict):
        return {k: _to_data(v) for k, v in x.items()}
    return np.asarray(x)


def load_cases(pattern: Optional[str] = None, names: Optional[Iterable[str]] = None,
               modules: Optional[Iterable[str]] = None, limit: Optional[int] = None) -> List[Dict[str, Any]]:
    """The node test cases as picklable dicts {name, model (bytes), inputs, outputs, ops}.

    `modules` (file names under onnx/backend/test/case/node, e.g. "conv") imports only those
    generators, which takes a fraction of a second instead of the ~30 s of all 1,884 cases; each
    generator reseeds numpy before it runs, so the data are the same as in a full load.
    `pattern` is a regular expression searched in the case name; `names` an exact list.
    """
    import onnx.backend.test.case.node as node_pkg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' numpy overflow warnings
        if modules is None:
            from onnx.backend.test.loader import load_node_model_tests

            raw = list(load_node_model_tests())
        else:
            for m in modules:
                importlib.import_module(f"{NODE_PACKAGE}.{m}")
            raw = list(node_pkg._NodeTestCases)
    wanted = set(names) if names is not None else None
    rx = re.compile(pattern) if pattern else None
    out, seen = [], set()
    for c in raw:
        if c.name in seen:
            continue
        if wanted is not None and c.name not in wanted:
            continue
        if rx is not None and not rx.search(c.name):
            continue
        seen.add(c.name)
        ins, outs = c.data_sets[0]
        out.append({"name": c.name, "model": c.model.SerializeToString(),
                    "inputs": [_to_data(x) for x in ins], "outputs": [_to_data(x) for x in outs],
                    "ops": sorted({n.op_type for n in c.model.graph.node})})
        if limit is not None and len(out) >= limit:
            break
    if wanted is not None:
        missing = wanted - seen
        if missing:
            raise KeyError(f"unknown case names: {sorted(missing)}")
    return out


# ----------------------------------------------------------------------------------------------
# One case on one target (runs in a worker process)
# ----------------------------------------------------------------------------------------------

class CaseFailure(Exception):
    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def _short_error(e: BaseException, limit: int = 600) -> str:
    msg = f"{type(e).__name__}: {e}".strip()
    # TVM errors carry a C++ backtrace; the message proper is the last non-empty lines
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    if len(lines) > 6:
        lines = [lines[0]] + ["..."] + lines[-4:]
    msg = "\n".join(lines)
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def freeze_inputs(model, inputs: Sequence[Any], keep: int = 1):
    """The model with every graph input after the first `keep` turned into an initializer holding
    its test data (so weights, biases, shapes and axes are constants), and the inputs left."""
    from onnx import numpy_helper

    graph_inputs = _graph_inputs(model)
    if len(graph_inputs) != len(inputs):
        return model, list(inputs)
    m = type(model)()
    m.CopyFrom(model)
    frozen = []
    for i, (vi, data) in enumerate(zip(graph_inputs, inputs)):
        if i < keep or not isinstance(data, np.ndarray):
            continue
        m.graph.initializer.append(numpy_helper.from_array(data, vi.name))
        frozen.append(vi.name)
    kept = [x for x in m.graph.input if x.name not in frozen]
    del m.graph.input[:]
    m.graph.input.extend(kept)
    return m, [d for vi, d in zip(graph_inputs, inputs) if vi.name not in frozen]


def _graph_inputs(model):
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _to_tvm(x: Any) -> Any:
    """Test data as VM arguments: arrays as tensors (0-d stays 0-d), sequences as lists of them."""
    import tvm

    if isinstance(x, np.ndarray):
        return tvm.runtime.tensor(x if x.flags.c_contiguous else x.copy(order="C"))
    if isinstance(x, list):
        return [_to_tvm(v) for v in x]
    return x


def _to_numpy(value: Any) -> Any:
    """A VM result as numpy (tensors), lists (tuples/arrays) or plain values."""
    if value is None:
        return None
    if hasattr(value, "numpy"):
        return value.numpy()
    if type(value).__name__ == "Shape":  # a shape value (ONNX Shape's int64 tensor) comes back as ffi.Shape
        return np.asarray(list(value), dtype=np.int64)
    if isinstance(value, (int, float, bool, np.generic)):
        return np.asarray(value)
    try:
        return [_to_numpy(v) for v in value]
    except TypeError:
        return value


def npu_dependent_outputs(mod, n_outputs: int) -> Optional[List[bool]]:
    """For each output of main: does it depend on an NPU function? Partitions `mod` like
    `tvm.compile(mod, target="npu")` under forced offload (public `tvm_npu.partition_for_npu`) and
    follows the data flow of the partitioned main from its `call_dps_packed` calls of the NPU
    symbols to the outputs. None when the outputs cannot be told apart."""
    import tvm
    import tvm_npu
    from tvm import relax
    from tvm_npu.target import config_of

    with tvm_npu.compile_options(should_run=False):
        part = tvm_npu.partition_for_npu(mod, config_of(tvm.target.Target("npu")))
    report = tvm_npu.last_report()
    symbols = set(report.functions) if report is not None else set()
    fn = part["main"]
    on_npu: Dict[Any, bool] = {}
    values: Dict[Any, Any] = {}
    for block in fn.body.blocks:
        for b in block.bindings:
            v = b.value
            values[b.var] = v
            direct = (isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op) and v.op.name == "relax.call_dps_packed"
                      and isinstance(v.args[0], relax.ExternFunc) and str(v.args[0].global_symbol) in symbols)
            on_npu[b.var] = direct or any(on_npu.get(x, False) for x in relax.analysis.free_vars(v))
    ret = fn.body.body
    if isinstance(ret, relax.Var) and isinstance(values.get(ret), relax.Tuple):
        ret = values[ret]
    fields = list(ret.fields) if isinstance(ret, relax.Tuple) else [ret]
    if len(fields) != n_outputs:
        return None
    return [any(on_npu.get(x, False) for x in relax.analysis.free_vars(f)) or on_npu.get(f, False) for f in fields]


def _compare(actual: Any, expected: Any, fp16: bool, where: str = "output") -> Dict[str, Any]:
    """Raises CaseFailure("mismatch") on a difference; returns error statistics."""
    if expected is None:
        if actual is not None:
            raise CaseFailure("mismatch", f"{where}: expected None (empty optional), got {type(actual).__name__}")
        return {}
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise CaseFailure("mismatch", f"{where}: expected a sequence of {len(expected)}, got "
                                          f"{type(actual).__name__}{'' if not isinstance(actual, list) else len(actual)}")
        stats: Dict[str, Any] = {}
        for i, (a, e) in enumerate(zip(actual, expected)):
            s = _compare(a, e, fp16, f"{where}[{i}]")
            if s:
                stats = s if not stats or s.get("max_abs_err", 0) > stats.get("max_abs_err", 0) else stats
        return stats
    if not isinstance(actual, np.ndarray):
        raise CaseFailure("mismatch", f"{where}: expected a {expected.dtype} tensor, got {type(actual).__name__}")
    if actual.dtype != expected.dtype:
        raise CaseFailure("mismatch", f"{where}: dtype {actual.dtype}, expected {expected.dtype}")
    if actual.shape != expected.shape:
        raise CaseFailure("mismatch", f"{where}: shape {list(actual.shape)}, expected {list(expected.shape)}")
    if expected.dtype.kind not in "fc":
        bad = actual != expected
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise CaseFailure("mismatch", f"{where}: {int(bad.sum())} of {bad.size} elements differ, first at "
                                          f"{list(idx)}: {actual[idx]!r} vs expected {expected[idx]!r}")
        return {"max_abs_err": 0.0}
    a = actual.astype(np.float64) if expected.dtype.kind == "f" else actual.astype(np.complex128)
    e = expected.astype(a.dtype)
    if e.size == 0:
        return {"max_abs_err": 0.0}
    nan_e, nan_a = np.isnan(e), np.isnan(a)
    inf_e, inf_a = np.isinf(e), np.isinf(a)
    special_bad = (nan_e != nan_a) | (inf_e != inf_a) | (inf_e & inf_a & (a != e))
    finite = ~(nan_e | inf_e) & ~(nan_a | inf_a)
    err = np.where(finite, np.abs(a - e), 0.0)
    finite_e = np.abs(e[~(nan_e | inf_e)])
    scale = float(finite_e.max()) if finite_e.size else 0.0
    if fp16:
        allowed = np.full(e.shape, FP16_ATOL + FP16_RTOL * scale)
        rule = f"|a-e| <= {FP16_ATOL:g} + {FP16_RTOL:g}*max|e| ({scale:.4g})"
    else:
        allowed = STRICT_ATOL + STRICT_RTOL * np.abs(np.where(finite, e, 0.0))
        rule = f"|a-e| <= {STRICT_ATOL:g} + {STRICT_RTOL:g}*|e|"
    bad = special_bad | (finite & (err > allowed))
    max_err = float(err.max()) if err.size else 0.0
    stats = {"max_abs_err": max_err, "max_abs_expected": scale,
             "err_rel_to_max": (max_err / scale) if scale > 0 else (0.0 if max_err == 0 else math.inf)}
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CaseFailure("mismatch", f"{where}: {int(bad.sum())} of {bad.size} elements outside {rule}; "
                                      f"max |a-e| = {max_err:.4g}; first at {list(idx)}: {a[idx]!r} vs "
                                      f"expected {e[idx]!r}")
    return stats


def run_case(case: Dict[str, Any], target: str, freeze: str = "none") -> Dict[str, Any]:
    """Imports, compiles, runs and checks one case on one target (in this process)."""
    import onnx
    import tvm
    import tvm_npu
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    res: Dict[str, Any] = {"status": "fail", "stage": "", "error": "", "npu_ops": 0, "cpu_ops": 0,
                           "npu_composites": [], "outputs": []}
    t0 = time.time()
    stage = "import"
    try:
        model = onnx.load_model_from_string(case["model"])
        inputs = list(case["inputs"])
        if freeze == "weights":
            model, inputs = freeze_inputs(model, inputs)
        mod = from_onnx(model, keep_params_in_input=False)
        params = mod["main"].params
        if len(params) != len(inputs):
            raise CaseFailure("import", f"main takes {len(params)} inputs, the test data has {len(inputs)}")
        stage = "compile"
        if target == "npu":
            before = tvm_npu.last_report()
            with tvm_npu.compile_options(should_run=False):
                ex = tvm.compile(mod, target="npu")
            report = tvm_npu.last_report()
            if report is None or report is before:
                raise CaseFailure("compile", "tvm.compile(target='npu') did not partition (no new report)")
            on_npu = [p for p in report.placements if p.target == "npu"]
            res["npu_ops"] = len(on_npu)
            res["cpu_ops"] = len(report.placements) - len(on_npu)
            res["npu_composites"] = sorted({p.composite for p in on_npu})
            if on_npu:
                res["placements"] = [{"binding": p.binding, "op": p.op, "target": p.target,
                                      "composite": p.composite} for p in report.placements]
        else:
            ex = tvm.compile(mod, target=target)
        stage = "run"
        vm = relax.VirtualMachine(ex, tvm.cpu())
        args = [_to_tvm(x) for x in inputs]
        result = _to_numpy(vm["main"](*args))
        stage = "compare"
        expected = case["outputs"]
        actual = result if len(expected) > 1 else [result]
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise CaseFailure("mismatch", f"{len(actual) if isinstance(actual, list) else 1} outputs, "
                                          f"expected {len(expected)}")
        # The fp16 tolerance applies to float outputs that depend on an NPU operator (all NPU
        # operators compute in float: the float path is the only one the compiler offloads).
        fp16_flags = [False] * len(expected)
        if target == "npu" and res["npu_ops"]:
            if len(expected) == 1:
                fp16_flags = [True]  # every operator of main feeds its only output
            else:
                flags = npu_dependent_outputs(mod, len(expected))
                if flags is None:
                    flags = [True] * len(expected)
                    res["fp16_rule"] = "all outputs (dependencies unknown)"
                fp16_flags = flags
        for i, (a, e, f) in enumerate(zip(actual, expected, fp16_flags)):
            stats = _compare(a, e, f, f"output {i}")
            res["outputs"].append({"tolerance": "fp16" if f else "strict", **stats})
        res["status"] = "pass"
    except CaseFailure as e:
        res["stage"], res["error"] = e.stage, str(e)
    except Exception as e:  # noqa: BLE001 - any failure of the stack is a result
        res["stage"], res["error"] = stage, _short_error(e)
    res["seconds"] = round(time.time() - t0, 3)
    return res


# ----------------------------------------------------------------------------------------------
# Worker processes with a per-task timeout
# ----------------------------------------------------------------------------------------------

def _worker_main(conn, log_path: str) -> None:
    """Serves (case, target, freeze) tasks until it receives None. Its stdout/stderr go to a log."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    warnings.simplefilter("ignore")
    try:
        import tvm  # noqa: F401 - the imports count as start-up, not as the first case's time
        import tvm_npu  # noqa: F401
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        case, target, freeze = task
        print(f"=== {case['name']} on {target}", flush=True)
        if case.get("crash_worker_for_test"):  # tests of the crash handling
            print("crashing on purpose", flush=True)
            os.abort()
        conn.send(run_case(case, target, freeze))


@dataclasses.dataclass
class _Slot:
    proc: Any = None
    conn: Any = None
    task: Any = None
    deadline: float = 0.0
    log: str = ""
    started: float = 0.0


def _tail(path: str, n: int = 6) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return "\n".join(lines[-n:])
    except OSError:
        return ""


def run_cases(cases: Sequence[Dict[str, Any]], targets: Sequence[str] = TARGETS, workers: int = 2,
              timeout: float = 60.0, freeze: str = "none", progress: bool = True) -> List[Dict[str, Any]]:
    """Runs every case on every target in `workers` spawned processes, each task with `timeout`
    seconds; a task whose worker dies or exceeds the time is recorded ("crash" / "timeout") and the
    worker is replaced. A case may carry its own "freeze" mode. Returns one record per case:
    {name, ops, freeze, <target>: result} in the order of `cases`."""
    ctx = mp.get_context("spawn")
    logdir = tempfile.mkdtemp(prefix="onnx_conformance_")
    tasks = collections.deque((ci, t) for ci in range(len(cases)) for t in targets)
    records = [{"name": c["name"], "ops": c["ops"], "freeze": c.get("freeze") or freeze} for c in cases]
    slots = [_Slot(log=os.path.join(logdir, f"worker{i}.log")) for i in range(max(1, workers))]
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(tasks), desc="conformance", unit="task", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            bar = None

    def start(slot: _Slot) -> None:
        parent, child = ctx.Pipe()
        slot.proc = ctx.Process(target=_worker_main, args=(child, slot.log), daemon=True)
        slot.proc.start()
        child.close()
        slot.conn = parent

    def stop(slot: _Slot, kill: bool) -> None:
        if slot.proc is None:
            return
        if slot.proc.pid is not None:  # started
            if kill and slot.proc.is_alive():
                slot.proc.kill()  # only the worker this run started
            slot.proc.join(5)
        if slot.conn is not None:  # None when starting the worker failed: let that error show
            slot.conn.close()
        slot.proc = slot.conn = None

    def finish(slot: _Slot, result: Dict[str, Any]) -> None:
        ci, target = slot.task
        records[ci][target] = result
        slot.task = None
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(cases[ci]["name"][-40:], refresh=False)

    try:
        while tasks or any(s.task is not None for s in slots):
            for s in slots:
                if s.task is None and tasks:
                    if s.proc is None or not s.proc.is_alive():
                        stop(s, kill=True)
                        start(s)
                    s.task = tasks.popleft()
                    ci, target = s.task
                    try:
                        s.conn.send((cases[ci], target, cases[ci].get("freeze") or freeze))
                    except (BrokenPipeError, OSError):
                        pass  # the worker died before the task: seen as a crash below
                    s.started = time.time()
                    # the first task of a fresh worker also pays for importing tvm and tvm_npu
                    s.deadline = s.started + timeout
            busy = [s for s in slots if s.task is not None]
            now = time.time()
            wait_for = max(0.0, min(s.deadline for s in busy) - now) if busy else 0.0
            mp.connection.wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=wait_for + 0.05)
            now = time.time()
            for s in busy:
                got = None
                try:
                    if s.conn.poll():
                        got = s.conn.recv()
                except (EOFError, OSError):
                    got = None
                if got is not None:
                    finish(s, got)
                elif not s.proc.is_alive():
                    code = s.proc.exitcode
                    stop(s, kill=False)
                    tail = _tail(s.log)
                    finish(s, {"status": "fail", "stage": "crash", "npu_ops": 0, "outputs": [],
                               "error": f"worker died (exit code {code})" + (f"; log tail:\n{tail}" if tail else ""),
                               "seconds": round(now - s.started, 3)})
                elif now > s.deadline:
                    stop(s, kill=True)
                    finish(s, {"status": "fail", "stage": "timeout", "npu_ops": 0, "outputs": [],
                               "error": f"no result within {timeout:g} s", "seconds": round(now - s.started, 3)})
    finally:
        for s in slots:
            if s.proc is not None and s.proc.is_alive():
                try:
                    s.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
                s.proc.join(5)
            stop(s, kill=True)
        if bar is not None:
            bar.close()
        shutil.rmtree(logdir, ignore_errors=True)
    return records


# ----------------------------------------------------------------------------------------------
# Summary, table, JSON
# ----------------------------------------------------------------------------------------------

_STAGE_ORDER = {"crash": 0, "timeout": 0, "import": 1, "compile": 2, "run": 3, "compare": 4, "mismatch": 4}


def passed(record: Dict[str, Any], target: str) -> bool:
    return record.get(target, {}).get("status") == "pass"


def summarize(records: Sequence[Dict[str, Any]], targets: Sequence[str] = TARGETS) -> Dict[str, Any]:
    s: Dict[str, Any] = {"cases": len(records)}
    for t in targets:
        s[f"{t}_pass"] = sum(passed(r, t) for r in records)
        s[f"{t}_failures_by_stage"] = dict(collections.Counter(
            r[t].get("stage") or "?" for r in records if t in r and not passed(r, t)))
    if "npu" in targets:
        used = [r for r in records if r.get("npu", {}).get("npu_ops", 0) > 0]
        s["npu_used"] = len(used)
        s["npu_used_pass"] = sum(passed(r, "npu") for r in used)
        s["npu_operators"] = sum(r["npu"]["npu_ops"] for r in used)
        comps = collections.Counter(c or "(unnamed in the report)" for r in used for c in r["npu"].get("npu_composites", []))
        s["npu_composites"] = dict(sorted(comps.items()))
        fp16 = [o for r in used if passed(r, "npu") for o in r["npu"].get("outputs", []) if o.get("tolerance") == "fp16"]
        s["fp16_outputs"] = len(fp16)
        s["fp16_max_err_rel_to_max"] = max((o.get("err_rel_to_max", 0.0) for o in fp16), default=0.0)
        s["fp16_max_abs_err"] = max((o.get("max_abs_err", 0.0) for o in fp16), default=0.0)
    if "llvm" in targets and "npu" in targets:
        reg = [r for r in records if passed(r, "llvm") and not passed(r, "npu")]
        s["llvm_pass_npu_fail"] = len(reg)
        s["regressions"] = [{"name": r["name"], "ops": r["ops"], "stage": r["npu"].get("stage", ""),
                             "npu_ops": r["npu"].get("npu_ops", 0), "error": r["npu"].get("error", "")}
                            for r in reg]
        s["npu_pass_llvm_fail"] = sum(passed(r, "npu") and not passed(r, "llvm") for r in records)
        # (the looser fp16 tolerance of NPU outputs can accept what llvm fails strictly: listed, not hidden)
        s["npu_pass_llvm_fail_cases"] = [{"name": r["name"], "llvm_stage": r["llvm"].get("stage", ""),
                                          "llvm_error": r["llvm"].get("error", "")}
                                         for r in records if passed(r, "npu") and not passed(r, "llvm")]
        # Cases that fail on both, but on the NPU earlier than on llvm (e.g. llvm runs and mismatches,
        # npu does not compile) or by a crash/timeout: compiler bugs hidden behind a frontend failure.
        s["npu_fails_earlier"] = [
            {"name": r["name"], "ops": r["ops"], "llvm_stage": r["llvm"].get("stage", ""),
             "stage": r["npu"].get("stage", ""), "npu_ops": r["npu"].get("npu_ops", 0), "error": r["npu"].get("error", "")}
            for r in records if not passed(r, "llvm") and not passed(r, "npu")
            and _STAGE_ORDER.get(r["npu"].get("stage"), 0) < _STAGE_ORDER.get(r["llvm"].get("stage"), 0)]
    return s


def by_operator(records: Sequence[Dict[str, Any]], targets: Sequence[str] = TARGETS) -> Dict[str, Dict[str, int]]:
    """Per ONNX operator of the case's graph: cases, passes per target, cases that used the NPU."""
    table: Dict[str, Dict[str, int]] = {}
    for r in records:
        for op in r["ops"]:
            row = table.setdefault(op, {"cases": 0, **{t: 0 for t in targets}, "npu_used": 0})
            row["cases"] += 1
            for t in targets:
                row[t] += passed(r, t)
            if r.get("npu", {}).get("npu_ops", 0) > 0:
                row["npu_used"] += 1
    return dict(sorted(table.items()))


def format_report(summary: Dict[str, Any], records: Sequence[Dict[str, Any]], targets: Sequence[str] = TARGETS,
                  operators: bool = False) -> str:
    n = summary["cases"]
    pct = (lambda k: f"{summary[k]:5d} / {n}  ({100.0 * summary[k] / n:5.1f} %)") if n else (lambda k: "0")
    out = io.StringIO()
    w = out.write
    w(f"ONNX node conformance: {n} cases\n")
    for t in targets:
        w(f"  {t:4s} pass                 {pct(f'{t}_pass')}\n")
    if "npu" in targets:
        w(f"  cases using the NPU       {summary['npu_used']:5d}  ({summary['npu_used_pass']} of them pass; "
          f"{summary['npu_operators']} operators on the NPU)\n")
        w(f"  fp16-tolerance outputs    {summary['fp16_outputs']:5d}  (largest error {summary['fp16_max_err_rel_to_max']:.3g}"
          f" x max|expected|, tolerance {FP16_RTOL:g} x max|expected| + {FP16_ATOL:g})\n")
    if "llvm_pass_npu_fail" in summary:
        w(f"  llvm pass, npu fail       {summary['llvm_pass_npu_fail']:5d}  (must be 0)\n")
        w(f"  npu pass, llvm fail       {summary['npu_pass_llvm_fail']:5d}\n")
    for t in targets:
        fails = summary.get(f"{t}_failures_by_stage", {})
        if fails:
            w(f"  {t} failures by stage: " + ", ".join(f"{k} {v}" for k, v in sorted(fails.items())) + "\n")
    if summary.get("npu_composites"):
        w("  NPU composites (cases): " + ", ".join(f"{k} {v}" for k, v in summary["npu_composites"].items()) + "\n")
    if operators:
        ops = by_operator(records, targets)
        w(f"\n  {'operator':28s} {'cases':>5s} " + " ".join(f"{t:>5s}" for t in targets) + "  npu_used\n")
        for op, row in ops.items():
            w(f"  {op:28s} {row['cases']:5d} " + " ".join(f"{row[t]:5d}" for t in targets) + f"  {row['npu_used']:8d}\n")
    regs = summary.get("regressions", [])
    if regs:
        w(f"\nCases that pass on llvm but fail on npu ({len(regs)}):\n")
        for r in regs:
            err = r["error"].replace("\n", "\n      ")
            w(f"  {r['name']}  [{','.join(r['ops'])}; {r['npu_ops']} ops on the NPU; {r['stage']}]\n      {err}\n")
    npu_only = summary.get("npu_pass_llvm_fail_cases", [])
    if npu_only:
        w(f"\nCases that pass on npu but fail on llvm ({len(npu_only)}):\n")
        for r in npu_only:
            err = r["llvm_error"].splitlines()[0][:160] if r["llvm_error"] else ""
            w(f"  {r['name']}  [llvm: {r['llvm_stage']}] {err}\n")
    earlier = summary.get("npu_fails_earlier", [])
    if earlier:
        w(f"\nCases failing on both targets, on npu at an earlier stage than on llvm ({len(earlier)}):\n")
        for r in earlier:
            err = r["error"].replace("\n", "\n      ")
            w(f"  {r['name']}  [{','.join(r['ops'])}; llvm: {r['llvm_stage']}; npu: {r['stage']}, "
              f"{r['npu_ops']} ops on the NPU]\n      {err}\n")
    return out.getvalue()


def provenance() -> Dict[str, Any]:
    """What was measured: the project's commit (and files changed since), tvm and onnx versions."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out: Dict[str, Any] = {}
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                       text=True, timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "tvm_npu", "npu_emulator"], cwd=root,
                                 capture_output=True, text=True, timeout=10).stdout.split("\n")
        out["compiler_changes_uncommitted"] = [ln[3:] for ln in changed if ln.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    for mod in ("tvm", "onnx"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=None, help="regular expression searched in case names (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="at most N cases (after --cases)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case and target")
    ap.add_argument("--json", default=None, help="write the summary and every case's results here")
    ap.add_argument("--targets", default="llvm,npu", help="comma-separated subset of llvm,npu")
    ap.add_argument("--freeze", choices=("none", "weights"), default="none",
                    help="weights: graph inputs after the first become constants (NPU conv/matmul need constant weights)")
    ap.add_argument("--operators", action="store_true", help="also print the per-operator table")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t!r} (llvm, npu)")

    t0 = time.time()
    cases = load_cases(pattern=args.cases, limit=args.limit)
    t_load = time.time() - t0
    print(f"loaded {len(cases)} cases in {t_load:.1f} s", file=sys.stderr)
    records = run_cases(cases, targets, workers=args.workers, timeout=args.timeout, freeze=args.freeze,
                        progress=not args.no_progress)
    summary = summarize(records, targets)
    summary.update({"freeze": args.freeze, "targets": targets, "workers": args.workers, "timeout_s": args.timeout,
                    "seconds": round(time.time() - t0, 1), "load_seconds": round(t_load, 1),
                    "provenance": provenance(),
                    "tolerances": {"strict": {"rtol": STRICT_RTOL, "atol": STRICT_ATOL},
                                   "fp16": {"rtol_of_max": FP16_RTOL, "atol": FP16_ATOL}}})
    print(format_report(summary, records, targets, operators=args.operators))
    print(f"({summary['seconds']} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "operators": by_operator(records, targets), "cases": records}, f, indent=1,
                      default=str)
    return 1 if summary.get("llvm_pass_npu_fail", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
