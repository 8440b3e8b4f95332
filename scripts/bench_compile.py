#!/usr/bin/env python3
"""Compile time, measured where a user feels it: the first `tvm.compile` in a fresh process.

Two comparisons in one run (text and --json), each measurement repeated --repeat times (median):

  vela  For every .tflite in --vela-data (default ../shared/data/vela beside the repository): the
        first `tvm.compile(mod, target="npu")` in a fresh process after `import tvm_npu`, the model
        loaded as `tvm-npu compile` loads it (tvm_npu.importer.load), against the WHOLE process wall
        time of Vela 5.2 on the same file (`vela FILE --accelerator-config ethos-u65-256
        --system-config Ethos_U65_Client_Server --memory-mode Dedicated_Sram_384KB`, Vela's built-in
        vela.ini; the configuration of ../shared/data/vela/vela_5.2_estimates.json). The subprocess's
        whole wall time and its import time are reported too. Target: compile / Vela <= 1.
  zoo   For every zoo model (model_zoo/registry.py, loaded as scripts/bench_models.py does): the first
        `tvm.compile` in a fresh process for target "npu" against target "llvm" of the same Relax
        module (tvm_npu is imported for both, so the frontends are identical). Target: npu / llvm <= 1.

    python scripts/bench_compile.py [--models a,b] [--repeat 3] [--skip-zoo] [--skip-vela] [--json out.json]
    python scripts/bench_compile.py --pythonpath /tmp/base ...   # measure another tree (e.g. a pristine worktree)

Vela runs from its own virtual environment, --vela-venv (default .venv-vela in the repository root);
when it is missing it is created with the system python3 and `pip install ethos-u-vela==5.2.0`
(which may build Vela's C extension). Zoo models are fetched (and the int8 ones quantised) once in
this process before any timing, so the timed processes only read the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

_T_START = time.perf_counter()  # the worker's clock starts before any heavy import

REPO = Path(__file__).resolve().parent.parent
VELA_VERSION = "5.2.0"
VELA_ARGS = ["--accelerator-config", "ethos-u65-256", "--system-config", "Ethos_U65_Client_Server",
             "--memory-mode", "Dedicated_Sram_384KB"]


def default_vela_data() -> Path:
    return REPO.parent / "shared" / "data" / "vela"


# ---- the worker: one fresh process, one compile -----------------------------------------------------

class TensorIRClock:
    """Time spent inside TVM's TensorIR machinery during the compile: building PrimFuncs (te.compute,
    te.create_prim_func) and every s_tir.Schedule primitive (outermost calls only). It is the part of
    the compile that scheduling each operator as a TensorIR kernel costs whatever tvm_npu's own code
    does; its overhead is a few microseconds per call."""

    def __init__(self):
        self.seconds, self.calls, self._depth = 0.0, 0, 0

    def _wrap(self, fn):
        clock = self

        def timed(*a, **k):
            if clock._depth:
                return fn(*a, **k)
            clock._depth += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                clock.seconds += time.perf_counter() - t
                clock.calls += 1
                clock._depth -= 1

        return timed

    def install(self) -> None:
        from tvm import s_tir, te

        for name, fn in list(vars(s_tir.Schedule).items()):
            if callable(fn) and not name.startswith("_") or name == "__init__":
                setattr(s_tir.Schedule, name, self._wrap(fn))
        te.compute, te.create_prim_func = self._wrap(te.compute), self._wrap(te.create_prim_func)  # read as te.<name>


def worker(kind: str, model: str, target: str, info: bool) -> Dict[str, Any]:
    """Runs in the child: import, load, time the first tvm.compile. `kind` is "tflite" (a file, loaded
    like the CLI) or "zoo" (a zoo model name, loaded like bench_models.py). With `info`, what was made
    is described after the clock stops (its time, extras_s, is taken off the process's wall time)."""
    t0 = time.perf_counter()
    import tvm

    import tvm_npu

    t1 = time.perf_counter()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from program_digest import load_model_file, load_zoo_model  # the loaders, old tree or new

    mod = load_model_file(model) if kind == "tflite" else load_zoo_model(model, False)[0]
    clock = TensorIRClock()
    if target.startswith("npu"):
        clock.install()
    t2 = time.perf_counter()
    ex = tvm.compile(mod, target=target)
    t3 = time.perf_counter()
    out: Dict[str, Any] = {"startup_s": t0 - _T_START, "import_s": t1 - t0, "load_s": t2 - t1, "compile_s": t3 - t2,
                           "tvm_npu": str(Path(tvm_npu.__file__).resolve().parent.parent),
                           "tensorir_s": clock.seconds, "tensorir_calls": clock.calls}
    if info and target.startswith("npu"):  # after the clock stops: what was made, for the record
        try:
            from program_digest import instruction_count, npu_artifact_blobs

            arts = [tvm_npu.Artifact.deserialize(b) for _, b in npu_artifact_blobs(ex)]
            out["artifacts"] = len(arts)
            out["instructions"] = sum(instruction_count(a.program) for a in arts)
            out["predicted_cycles"] = sum(int(m.get("predicted_cycles", 0)) for a in arts
                                          for m in a.producer.get("layers", []))
            rep = tvm_npu.last_report()
            out["ops_npu"], out["ops_total"] = sum(p.target == "npu" for p in rep.placements), len(rep.placements)
        except Exception as e:  # noqa: BLE001 - the timing stands without these
            out["note"] = f"{type(e).__name__}: {e}"
    out["extras_s"] = time.perf_counter() - t3
    return out


# ---- the parent --------------------------------------------------------------------------------------

class Progress:
    """tqdm when installed, else one plain line per step."""

    def __init__(self, total: int, quiet: bool):
        self.quiet, self.n, self.total, self.bar = quiet, 0, total, None
        if not quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                pass

    def step(self, what: str):
        self.n += 1
        if self.bar is not None:
            self.bar.set_description(what[:60])
            self.bar.update(1)
        elif not self.quiet:
            print(f"[{self.n}/{self.total}] {what}", file=sys.stderr, flush=True)

    def write(self, text: str):
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def child_env(pythonpath: Optional[str]) -> Dict[str, str]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def run_worker(kind: str, model: str, target: str, env: Dict[str, str], timeout: float, info: bool) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, model, target, str(out), str(int(info))]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.is_file():
            tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()][-2:]
            return {"error": f"exit {proc.returncode}: {' | '.join(tail)[:300]}"}
        res = json.loads(out.read_text())
        res["wall_s"] = wall - res.get("extras_s", 0.0)  # the process as if it stopped after compiling
        return res


def run_vela(vela: Path, tflite: Path, timeout: float) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-vela-") as tmp:
        cmd = [str(vela), str(tflite), *VELA_ARGS, "--output-dir", tmp]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()][-2:]
            return {"error": f"vela exit {proc.returncode}: {' | '.join(tail)[:300]}"}
        res: Dict[str, Any] = {"wall_s": wall}
        csvs = sorted(Path(tmp).glob("*_summary_*.csv"))
        if csvs:
            import csv

            with open(csvs[0], newline="") as f:
                row = next(csv.DictReader(f), {})
            for k in ("cycles_total", "cycles_npu", "nn_macs"):
                if row.get(k):
                    res[k] = int(float(row[k]))
        return res


def ensure_vela(venv: Path, quiet: bool) -> Path:
    vela = venv / "bin" / "vela"
    if vela.is_file():
        return vela
    py = shutil.which("python3") or sys.executable
    print(f"Vela: creating {venv} with {py} and installing ethos-u-vela=={VELA_VERSION} "
          "(this may build its C extension: a C compiler and Python headers are needed)", file=sys.stderr, flush=True)
    subprocess.run([py, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", *(["-q"] if quiet else []),
                    f"ethos-u-vela=={VELA_VERSION}"], check=True)
    if not vela.is_file():
        raise RuntimeError(f"{vela} missing after installing ethos-u-vela")
    return vela


def vela_version(vela: Path) -> str:
    try:
        return subprocess.run([str(vela), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def summarise(runs: List[Dict[str, Any]], keys=("compile_s", "wall_s", "import_s", "load_s", "tensorir_s"),
              warm: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Medians of the timed runs; descriptions (instructions, cycles, ...) from any run, warm-ups included."""
    ok = [r for r in runs if "error" not in r]
    out: Dict[str, Any] = {"runs": runs}
    if not ok:
        out["error"] = runs[0]["error"] if runs else "not run"
        return out
    for k in keys:
        vals = [r[k] for r in ok if k in r]
        if vals:
            out[k] = statistics.median(vals)
    for k in ("artifacts", "instructions", "predicted_cycles", "ops_npu", "ops_total", "cycles_total", "cycles_npu",
              "tvm_npu", "note"):
        for r in ok + [w for w in warm or [] if "error" not in w]:
            if k in r:
                out[k] = r[k]
                break
    if len(ok) < len(runs):
        out["failed_runs"] = len(runs) - len(ok)
    return out


def _ratio(a: Dict[str, Any], ka: str, b: Dict[str, Any], kb: str) -> Optional[float]:
    return a[ka] / b[kb] if ka in a and kb in b and b[kb] > 0 else None


def fmt(v, spec=".2f", width=8) -> str:
    return f"{v:{width}{spec}}" if isinstance(v, (int, float)) else f"{'-':>{width}}"


def prepare_zoo(names: List[str], quiet: bool) -> Dict[str, str]:
    """Fetches (and derives) every zoo model before timing; {name: error} of those that cannot be had."""
    from model_zoo.registry import get_model
    from program_digest import zoo_model_path

    errors = {}
    for name in names:
        try:
            zoo_model_path(get_model(name), not quiet)
        except Exception as e:  # noqa: BLE001 - reported in its row
            errors[name] = f"{type(e).__name__}: {e}"
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated zoo names and/or Vela file stems (default: all)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (median; default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each command first (file cache; default 1)")
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--skip-vela", action="store_true")
    ap.add_argument("--vela-data", type=Path, default=default_vela_data(),
                    help="directory of .tflite models (default: ../shared/data/vela from the repo root)")
    ap.add_argument("--vela-venv", type=Path, default=REPO / ".venv-vela",
                    help="virtual environment of Vela (default: .venv-vela in the repo root; created when missing)")
    ap.add_argument("--pythonpath", help="prepended to PYTHONPATH here and in every timed process (another tree)")
    ap.add_argument("--target", default="npu", help="the NPU target (default npu)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per process")
    ap.add_argument("--json", help="write every run and the medians here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.pythonpath:
        sys.path.insert(0, str(Path(args.pythonpath).resolve()))
        args.pythonpath = str(Path(args.pythonpath).resolve())
    elif str(REPO) not in sys.path:
        sys.path.append(str(REPO))  # appended: a PYTHONPATH must win over this checkout
    env = child_env(args.pythonpath)
    only = [m for m in args.models.split(",") if m] if args.models else None

    tflites = {p.stem: p for p in sorted(args.vela_data.glob("*.tflite"))} if args.vela_data.is_dir() else {}
    vela_names = [] if args.skip_vela else [n for n in tflites if only is None or n in only]
    if not args.skip_vela and not tflites:
        print(f"note: no .tflite in {args.vela_data}; the Vela comparison is skipped", file=sys.stderr)
    zoo_names: List[str] = []
    if not args.skip_zoo:
        from model_zoo.registry import MODELS

        zoo_names = [n for n in MODELS if only is None or n in only]
    if only:
        from model_zoo.registry import MODELS

        unknown = [n for n in only if n not in tflites and n not in MODELS]
        if unknown:
            ap.error(f"unknown model(s) {', '.join(unknown)}")

    result: Dict[str, Any] = {"repeat": args.repeat, "warmup": args.warmup, "target": args.target,
                              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                          "python": platform.python_version(), "loadavg_before": list(os.getloadavg())},
                              "pythonpath": args.pythonpath or os.environ.get("PYTHONPATH", ""),
                              "vela": [], "zoo": []}
    vela_bin = None
    if vela_names:
        vela_bin = ensure_vela(args.vela_venv, args.quiet)
        result["vela_version"] = vela_version(vela_bin)
        result["vela_args"] = VELA_ARGS
    zoo_errors = prepare_zoo(zoo_names, args.quiet) if zoo_names else {}

    per = args.warmup + args.repeat
    total = len(vela_names) * 2 * per + sum(2 * per for n in zoo_names if n not in zoo_errors)
    bar = Progress(total, args.quiet)
    t_all = time.perf_counter()
    try:
        for name in vela_names:
            npu_runs, vela_runs, warm = [], [], []
            for i in range(per):  # interleaved, so drift of the machine hits both sides alike
                r = run_worker("tflite", str(tflites[name]), args.target, env, args.timeout, info=i == 0)
                bar.step(f"{name} tvm_npu")
                v = run_vela(vela_bin, tflites[name], args.timeout)
                bar.step(f"{name} vela")
                if i >= args.warmup:
                    npu_runs.append(r)
                    vela_runs.append(v)
                else:
                    warm += [r, v]
            npu, vela = summarise(npu_runs, warm=warm[0::2]), summarise(vela_runs, keys=("wall_s",), warm=warm[1::2])
            row = {"model": name, "file": tflites[name].name, "tvm_npu": npu, "vela": vela,
                   "compile_over_vela": _ratio(npu, "compile_s", vela, "wall_s"),
                   "process_over_vela": _ratio(npu, "wall_s", vela, "wall_s")}
            result["vela"].append(row)
            bar.write(f"{name}: tvm_npu compile {fmt(npu.get('compile_s'), '.3f', 0)} s, process "
                      f"{fmt(npu.get('wall_s'), '.3f', 0)} s; vela process {fmt(vela.get('wall_s'), '.3f', 0)} s")
        for name in zoo_names:
            if name in zoo_errors:
                result["zoo"].append({"model": name, "error": zoo_errors[name]})
                continue
            runs: Dict[str, List[Dict[str, Any]]] = {args.target: [], "llvm": []}
            warms: Dict[str, List[Dict[str, Any]]] = {args.target: [], "llvm": []}
            for i in range(per):
                for tgt in (args.target, "llvm"):
                    r = run_worker("zoo", name, tgt, env, args.timeout, info=i == 0)
                    bar.step(f"{name} {tgt}")
                    (runs if i >= args.warmup else warms)[tgt].append(r)
            npu = summarise(runs[args.target], warm=warms[args.target])
            llvm = summarise(runs["llvm"], warm=warms["llvm"])
            row = {"model": name, "npu": npu, "llvm": llvm,
                   "npu_over_llvm": _ratio(npu, "compile_s", llvm, "compile_s")}
            result["zoo"].append(row)
            bar.write(f"{name}: npu {fmt(npu.get('compile_s'), '.2f', 0)} s, "
                      f"llvm {fmt(llvm.get('compile_s'), '.2f', 0)} s")
    finally:
        bar.close()
    result["wall_s"] = time.perf_counter() - t_all
    result["machine"]["loadavg_after"] = list(os.getloadavg())  # > 1 on 2 CPUs: something else ran too
    srcs = {r[k].get("tvm_npu") for r in result["vela"] + result["zoo"] for k in ("tvm_npu", "npu", "llvm") if k in r}
    result["tvm_npu"] = sorted(s for s in srcs if s)

    lines = [f"tvm_npu from {', '.join(result['tvm_npu']) or '?'}; {args.repeat} fresh process(es) per figure "
             f"(median), {args.warmup} warm-up; {os.cpu_count()} CPUs"]
    worst = []
    if result["vela"]:
        lines += ["", f"Compile time against Vela {result.get('vela_version', '?')} ({' '.join(VELA_ARGS)}):",
                  f"{'model':30s} {'import s':>8s} {'load s':>7s} {'compile s':>9s} {'process s':>9s} "
                  f"{'vela s':>7s} {'compile/vela':>12s} {'process/vela':>12s} {'TensorIR s':>10s} "
                  f"{'instrs':>7s} {'pred cyc':>9s} {'vela cyc':>9s}"]
        for r in result["vela"]:
            n, v = r["tvm_npu"], r["vela"]
            if "error" in n or "error" in v:
                lines.append(f"{r['model']:30s} ERROR {n.get('error') or v.get('error')}")
                worst.append(float("inf"))
                continue
            lines.append(f"{r['model']:30s} {fmt(n.get('import_s'))} {fmt(n.get('load_s'), '.2f', 7)} "
                         f"{fmt(n.get('compile_s'), '.3f', 9)} {fmt(n.get('wall_s'), '.3f', 9)} "
                         f"{fmt(v.get('wall_s'), '.3f', 7)} "
                         f"{fmt(r['compile_over_vela'], '.2f', 12)} {fmt(r['process_over_vela'], '.2f', 12)} "
                         f"{fmt(n.get('tensorir_s'), '.3f', 10)} {fmt(n.get('instructions'), 'd', 7)} {fmt(n.get('predicted_cycles'), 'd', 9)} "
                         f"{fmt(v.get('cycles_total'), 'd', 9)}")
            worst.append(r["compile_over_vela"])
        lines.append("compile: tvm.compile alone, the first in a fresh process; process: that process's whole wall "
                     "time; vela: Vela's whole process; TensorIR: the part of compile spent in TVM's te / s_tir.Schedule "
                     "calls (building and scheduling each operator's PrimFunc). Target: compile/vela <= 1.")
    if result["zoo"]:
        lines += ["", f"Compile time, target {args.target} against llvm (the first tvm.compile in a fresh process):",
                  f"{'model':30s} {args.target + ' s':>9s} {'llvm s':>9s} {'npu/llvm':>9s} {'NPU ops':>9s} "
                  f"{'load s':>7s}"]
        for r in result["zoo"]:
            if "error" in r or "error" in r["npu"] or "error" in r["llvm"]:
                err = r.get("error") or r["npu"].get("error") or r["llvm"].get("error")
                npu_s = r.get("npu", {}).get("compile_s")
                llvm_s = r.get("llvm", {}).get("compile_s")
                lines.append(f"{r['model']:30s} {fmt(npu_s, '.2f', 9)} {fmt(llvm_s, '.2f', 9)} ERROR {str(err)[:120]}")
                continue
            n, l_ = r["npu"], r["llvm"]
            ops = f"{n['ops_npu']}/{n['ops_total']}" if "ops_npu" in n else "-"
            lines.append(f"{r['model']:30s} {fmt(n['compile_s'], '.2f', 9)} {fmt(l_['compile_s'], '.2f', 9)} "
                         f"{fmt(r['npu_over_llvm'], '.2f', 9)} {ops:>9s} {fmt(n.get('load_s'), '.2f', 7)}")
        lines.append("Target: npu/llvm <= 1 for every model.")
    lines.append(f"\nbench_compile took {result['wall_s']:.0f} s; load average before / after: "
                 f"{result['machine']['loadavg_before'][0]:.2f} / {result['machine']['loadavg_after'][0]:.2f}")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    failed = any("error" in r or "error" in r.get("npu", {}) or "error" in r.get("llvm", {})
                 or "error" in r.get("tvm_npu", {}) or "error" in r.get("vela", {})
                 for r in result["vela"] + result["zoo"])
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--worker":
        _, _, _kind, _model, _target, _out, _info = sys.argv
        if str(REPO) not in sys.path:
            sys.path.append(str(REPO))  # appended: the PYTHONPATH given by the parent wins
        Path(_out).write_text(json.dumps(worker(_kind, _model, _target, _info == "1")))
        sys.exit(0)
    sys.exit(main())
