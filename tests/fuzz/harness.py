"""The fuzz targets and their runner: each input goes through the same path a user's input takes and
is classified as

    error     a typed error of ours (tvm_npu.errors; counted per class and exit status)
    success   it ran; for the model targets the NPU's outputs match the CPU build's (llvm)
    skipped   it loaded and compiled, but its inputs exceed RUN_BUDGET_BYTES: not run, not compared
    mismatch  it ran, and the NPU's outputs differ from the CPU build's beyond fp16 rounding
    crash     an untyped exception (a raw traceback), an InternalError, or the worker process dying
    hang      no answer within the timeout

Targets: "onnx" and "tflite" (importer.load of the bytes, then - when it loads - compile for the NPU
with every supported operator offloaded and fp16 overflows refused (fp16_overflow="error": a refusal
is a typed error, "must match or refuse"), and for llvm through the CLI's build step, run both on the
same inputs, compare), "artifact" (Artifact.deserialize and what `inspect` / `disasm` read),
"cli" (an argv of the command line's words against small files; the one-line error rule included).

Inputs run in a worker process (restarted after a crash or a hang) so that a segfault or an endless
loop is counted, not fatal. Used by tests/fuzz/test_fuzz.py (the CI smoke run) and scripts/fuzz.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TARGETS = ("onnx", "tflite", "artifact", "cli")
OUTCOMES = ("error", "success", "skipped", "mismatch", "crash", "hang")
RUN_BUDGET_BYTES = 16 << 20  # larger models are imported and compiled, but not run (the emulator is slow)
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "artifact": ".npua", "cli": ".json"}


def _paths() -> None:
    for p in (str(HERE), str(HERE.parent)):  # seeds.py / mutate.py, and tests/helpers.py
        if p not in sys.path:
            sys.path.insert(0, p)


# ---- seeds and inputs -----------------------------------------------------------------------------

def corpus(target: str) -> List[Tuple[str, bytes]]:
    """The committed corpus of a target: its seeds first (valid inputs), then regression inputs."""
    return [(p.name, p.read_bytes()) for p in sorted((CORPUS / target).glob("*")) if p.is_file()]


def inputs(target: str, n: int, seed: int = 0):
    """n inputs: the corpus as it is, then mutations of its valid seeds (files named seed_*)."""
    _paths()
    from mutate import mutate

    from cli_words import random_argv

    files = corpus(target)
    rng = np.random.default_rng(seed)
    for name, data in files[:n]:
        yield name, data
    seeds = [d for name, d in files if name.startswith("seed_")]
    for i in range(max(n - len(files), 0)):
        if target == "cli":
            yield f"argv-{seed}-{i}", json.dumps(random_argv(rng)).encode()
        else:
            data, how = mutate(target, seeds[int(rng.integers(len(seeds)))], rng)
            yield f"{seed}-{i}:{how}", data


# ---- the targets (run in the worker) ----------------------------------------------------------------

def _error(e: BaseException) -> Dict[str, Any]:
    from tvm_npu.errors import InternalError, NPUError, RunError, as_npu_error

    if isinstance(as_npu_error(e), RunError):  # the run refused an fp16 overflow (policy "error")
        return {"outcome": "error", "kind": "RunError", "detail": str(e)[:300]}
    if isinstance(e, NPUError) and not isinstance(e, InternalError):
        return {"outcome": "error", "kind": type(e).__name__, "detail": str(e)[:300]}
    return {"outcome": "crash", "kind": type(e).__name__, "detail": "".join(traceback.format_exception(e))[-2000:]}


def _feeds(loaded, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _, shape, dtype in loaded.inputs:
        if np.issubdtype(np.dtype(dtype), np.integer):
            out.append(rng.integers(-128, 128, shape).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def _run(ex, feeds) -> List[np.ndarray]:
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in feeds])
    items = list(out) if isinstance(out, (list, tuple)) or not hasattr(out, "numpy") else [out]
    return [o.numpy() for o in items]


def compare(npu: List[np.ndarray], cpu: List[np.ndarray]) -> Optional[str]:
    """None when the NPU's outputs match the CPU build's, else why not. Floats: fp16 storage with fp32
    accumulation, so max |npu - cpu| <= 2e-2 of the output's range (+1e-3); a non-finite value where
    the CPU's is finite is a mismatch. Integers (int8 models): within one quantisation step."""
    if len(npu) != len(cpu):
        return f"{len(npu)} outputs, the CPU build has {len(cpu)}"
    for i, (a, b) in enumerate(zip(npu, cpu)):
        if a.shape != b.shape:
            return f"output {i}: shape {a.shape}, the CPU build's {b.shape}"
        if np.issubdtype(b.dtype, np.integer):
            d = int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max(initial=0))
            if d > 1:
                return f"output {i}: max |npu - cpu| = {d} steps"
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        finite = np.isfinite(b64)
        if (finite & ~np.isfinite(a64)).any():
            return f"output {i}: {int((finite & ~np.isfinite(a64)).sum())} non-finite values where the CPU's are finite"
        if finite.any():
            scale = float(np.abs(b64[finite]).max())
            d = float(np.abs(a64[finite] - b64[finite]).max())
            if d > 2e-2 * scale + 1e-3:
                return f"output {i}: max |npu - cpu| = {d:.4g} on a range of {scale:.4g}"
    return None


def run_model(data: bytes, fmt: str) -> Dict[str, Any]:
    from tvm_npu.cli import _build
    from tvm_npu.importer import load

    try:
        loaded = load(data, format=fmt)
        ex_npu, _, _ = _build(loaded, _npu(), {"should_run": False, "fp16_overflow": "error"})
        ex_cpu, _, _ = _build(loaded, _llvm(), {})
        nbytes = sum(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d in loaded.inputs)
        if nbytes > RUN_BUDGET_BYTES:
            return {"outcome": "skipped", "kind": f"inputs > {RUN_BUDGET_BYTES >> 20} MB", "detail": str(loaded.inputs)}
        feeds = _feeds(loaded)
        npu, cpu = _run(ex_npu, feeds), _run(ex_cpu, feeds)
    except Exception as e:  # noqa: BLE001 - classified
        return _error(e)
    why = compare(npu, cpu)
    if why and fmt == "tflite" and all(np.issubdtype(c.dtype, np.integer) for c in cpu):
        # TVM's llvm build of an int8 TFLite model rounds its own way (up to a few steps from LiteRT);
        # the NPU's integer path is defined as LiteRT's reference kernels: LiteRT arbitrates
        from tvm_npu.testing.tflite_int8 import run_reference

        try:
            ref = [r.reshape(c.shape) for r, c in zip(run_reference(data, feeds), cpu)]
        except Exception as e:  # noqa: BLE001 - LiteRT refuses models that TVM imports: no arbiter
            return {"outcome": "mismatch", "kind": "numeric (LiteRT refuses the model)",
                    "detail": f"{why}; LiteRT: {str(e).strip().splitlines()[0][:200]}"}
        if compare(npu, ref) is None:
            return {"outcome": "success", "kind": "matches LiteRT (the llvm build does not)", "detail": why}
        why += f"; against LiteRT: {compare(npu, ref)}"
    if why is None:
        return {"outcome": "success", "kind": "ok"}
    # (non-finite NPU outputs where the CPU's are finite: fp16 overflow, issue 11's fp16 range work)
    kind = "numeric: non-finite on the NPU (fp16 range)" if "non-finite" in why else "numeric"
    return {"outcome": "mismatch", "kind": kind, "detail": why}


def _npu():
    from tvm_npu.target import npu_target

    return npu_target("npu")


def _llvm():
    import tvm

    return tvm.target.Target("llvm")


def run_artifact(data: bytes) -> Dict[str, Any]:
    from tvm_npu.artifact import Artifact
    from tvm_npu.isa import Program, disassemble

    try:
        art = Artifact.deserialize(data)
        art.meta()
        Program.decode(art.program)
        disassemble(art.program)
    except Exception as e:  # noqa: BLE001 - classified
        from tvm_npu.isa import ISAError

        if isinstance(e, ISAError):  # (disasm / inspect report it as the program's error)
            return {"outcome": "error", "kind": "ISAError", "detail": str(e)[:300]}
        return _error(e)
    return {"outcome": "success", "kind": "ok"}


def run_cli(data: bytes, workdir: str) -> Dict[str, Any]:
    """main(argv) in `workdir`: an exit status and, on an error without --debug, exactly one line on
    stderr (`tvm-npu CMD: error: ...`) or argparse's usage message; status 70 is a crash."""
    from tvm_npu.cli import main

    argv = json.loads(data)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as e:  # argparse: usage errors (2) and --help (0)
                status = e.code if isinstance(e.code, int) else 2
                if status:
                    return {"outcome": "error", "kind": "usage", "detail": err.getvalue()[-200:]}
    except Exception as e:  # noqa: BLE001 - an exception through main's boundary is a crash
        return {"outcome": "crash", "kind": type(e).__name__, "detail": "".join(traceback.format_exception(e))[-2000:]}
    finally:
        os.chdir(cwd)
    text = err.getvalue()
    if status == 70 or "Traceback" in text and "--debug" not in argv:
        return {"outcome": "crash", "kind": f"exit {status}", "detail": text[-2000:]}
    if status not in (0, 1):
        lines = [ln for ln in text.splitlines() if ln.strip() and "warning:" not in ln]
        if "--debug" not in argv and (len(lines) != 1 or ": error: " not in lines[0]):
            return {"outcome": "crash", "kind": "not one line", "detail": text[-2000:]}
        return {"outcome": "error", "kind": f"exit {status}", "detail": lines[-1][:300] if lines else ""}
    return {"outcome": "success", "kind": f"exit {status}"}


# ---- the worker process ------------------------------------------------------------------------------

def _worker(conn, target: str) -> None:
    _paths()
    import warnings

    warnings.filterwarnings("ignore")
    import tvm_npu  # noqa: F401 - registers the NPU

    workdir = None
    if target == "cli":
        from cli_words import make_files

        workdir = tempfile.mkdtemp(prefix="tvm-npu-fuzz-cli-")
        make_files(workdir)
    while True:
        try:
            data = conn.recv()
        except EOFError:
            return
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if target in ("onnx", "tflite"):
                result = run_model(data, target)
            elif target == "artifact":
                result = run_artifact(data)
            else:
                result = run_cli(data, workdir)
        conn.send(result)


class Runner:
    """One worker process per target; run(data) -> result dict, with crash and hang detection."""

    def __init__(self, target: str, timeout: float):
        self.target, self.timeout, self.proc, self.conn = target, timeout, None, None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.target), daemon=True)
        self.proc.start()
        child.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.proc = None

    def run(self, data: bytes) -> Dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
            self.conn.send(b"" if self.target != "cli" else b'["--version-probe"]')  # (warm up: imports)
            self.conn.poll(600)
            with contextlib.suppress(EOFError):
                self.conn.recv()
        self.conn.send(data)
        if not self.conn.poll(self.timeout):
            self.stop()
            return {"outcome": "hang", "kind": f"> {self.timeout:g} s"}
        try:
            return self.conn.recv()
        except EOFError:
            code = self.proc.exitcode if self.proc else None
            self.stop()
            return {"outcome": "crash", "kind": f"worker died (exit {code})"}


def fuzz(target: str, n: int, seed: int = 0, timeout: float = 120.0, save_dir: Optional[Path] = None,
         log=None) -> Dict[str, Any]:
    """Runs n inputs of `target`; returns the counts (per outcome and per kind) and the findings
    (every crash, hang and mismatch with its detail; the inputs saved in save_dir)."""
    runner = Runner(target, timeout)
    counts, kinds, findings, slowest = Counter({o: 0 for o in OUTCOMES}), Counter(), [], []
    t0 = time.perf_counter()
    try:
        for i, (name, data) in enumerate(inputs(target, n, seed)):
            t1 = time.perf_counter()
            result = runner.run(data)
            slowest.append((time.perf_counter() - t1, name, result["outcome"], result.get("detail", "")[:120]))
            counts[result["outcome"]] += 1
            kinds[f"{result['outcome']}:{result['kind']}"] += 1
            if result["outcome"] in ("crash", "hang", "mismatch"):
                finding = {"input": name, **result}
                if save_dir is not None:
                    save_dir.mkdir(parents=True, exist_ok=True)
                    path = save_dir / f"{target}-{len(findings)}{SUFFIX[target]}"
                    path.write_bytes(data)
                    finding["saved"] = str(path)
                findings.append(finding)
            if log is not None and (i + 1) % 50 == 0:
                log(f"{target}: {i + 1}/{n} {dict(counts)}")
    finally:
        runner.stop()
    return {"target": target, "n": sum(counts.values()), "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
            "counts": dict(counts), "kinds": dict(sorted(kinds.items())), "findings": findings,
            "slowest": [{"seconds": round(t, 2), "input": nm, "outcome": o, "detail": d}
                        for t, nm, o, d in sorted(slowest, reverse=True)[:5]]}
