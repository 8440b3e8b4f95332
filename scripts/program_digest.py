#!/usr/bin/env python3
"""A digest of what the compiler emits for every zoo model and the Vela int8 MobileNets: per NPU
artifact its symbol, the sha256 of the encoded program and of the constants, the instruction count,
the performance model's predicted cycles and the emulated cycles of one run on fixed inputs. Two
digests compare byte for byte, so a refactor that must not change the output can be checked:

    python scripts/program_digest.py [--models a,b] [--json out.json]      # compile and digest
    python scripts/program_digest.py --json new.json --compare old.json    # ... and compare (exit 1 if any differ)
    python scripts/program_digest.py --current new.json --compare old.json # compare two saved digests

Models: the zoo (model_zoo/registry.py MODELS, loaded as scripts/bench_models.py does) and every
.tflite in --vela-data (default ../shared/data/vela beside the repository), named by file stem.
Inputs of the emulated run are seeded random tensors of the module's input shapes and dtypes, the
same in every run; `outputs_sha256` digests what the model returned for them. A model that fails
is reported in the table and the JSON, and the others still run (--isolate runs each in its own
process, so that even a crash is only that model's).

Which tvm_npu is measured is whatever `import tvm_npu` finds: PYTHONPATH wins over the editable
install, e.g. `PYTHONPATH=/tmp/base python scripts/program_digest.py` digests the tree at /tmp/base.
The JSON records the path and git commit of the tree it came from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
# Appended, not prepended: a PYTHONPATH (e.g. a pristine worktree) must win over this checkout.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

DIGEST_VERSION = 1
SEED = 0


def default_vela_data() -> Path:
    return REPO.parent / "shared" / "data" / "vela"


def sha256(data: bytes) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


# ---- where the artifacts live (the only place that touches tvm_npu's internals) ------------------

def npu_artifact_blobs(ex) -> List[Tuple[str, bytes]]:
    """(symbol, serialized artifact) of every NPU function in a compiled executable, in the order
    the npu runtime modules list them. Uses the runtime module's packed functions (npu_symbols,
    npu_artifact), which the exported library format depends on, so they are stable."""
    from tvm_npu.runtime_module import find_npu_modules

    out = []
    for m in find_npu_modules(ex.mod if hasattr(ex, "mod") else ex):
        for s in m["npu_symbols"]():
            out.append((str(s), bytes(m["npu_artifact"](str(s)))))
    return out


def instruction_count(program: bytes) -> int:
    """From the program header (magic, ISA version, reserved, count, byte length: docs/ISA.md)."""
    magic, _version, _reserved, count, _nbytes = struct.unpack_from("<4sHHII", program)
    if magic != b"NPUP":
        raise ValueError(f"program magic {magic!r}")
    return int(count)


def opcode_histogram(program: bytes) -> Dict[str, int]:
    try:
        from tvm_npu.isa import Program

        hist: Dict[str, int] = {}
        for ins in Program.decode(program):
            hist[ins.mnemonic] = hist.get(ins.mnemonic, 0) + 1
        return dict(sorted(hist.items()))
    except Exception:  # noqa: BLE001 - a nicety; the program bytes' digest is what compares
        return {}


# ---- models ------------------------------------------------------------------------------------

def zoo_names() -> List[str]:
    from model_zoo.registry import MODELS

    return list(MODELS)


def vela_files(vela_dir: Path) -> Dict[str, Path]:
    return {p.stem: p for p in sorted(Path(vela_dir).glob("*.tflite"))} if Path(vela_dir).is_dir() else {}


def load_model_file(path) -> Any:
    """The Relax module of a .tflite/.onnx file, loaded as `tvm-npu compile` loads it."""
    try:
        from tvm_npu.importer import load  # the one loader (since "One compiler driver")
    except ImportError:
        from tvm_npu.frontend import load  # before it
    return load(str(path)).mod


def zoo_model_path(model, progress: bool) -> Path:
    """The file the zoo compiles for `model` (fetched, or derived from the fetched one: int8 QDQ)."""
    try:
        from model_zoo.runner import model_path
    except ImportError:  # before model_path existed: what scripts/bench_models.py did
        from model_zoo.fetch import fetch
        from model_zoo.registry import all_sources

        path = fetch(model.source, progress=progress, also=all_sources())
        return model.derive(path, None, progress) if model.derive is not None else path
    return model_path(model, progress=progress)


def load_zoo_model(name: str, progress: bool):
    """(Relax module, file) of a zoo model, loaded as scripts/bench_models.py loads it."""
    from model_zoo.registry import get_model
    from model_zoo.runner import load_relax

    model = get_model(name)
    path = zoo_model_path(model, progress)
    return load_relax(model, path)[0], path


def load_model(name: str, vela: Dict[str, Path], progress: bool):
    """(Relax module, where it came from) for a zoo model name or a Vela file stem."""
    if name in vela:
        return load_model_file(vela[name]), str(vela[name])
    mod, path = load_zoo_model(name, progress)
    return mod, str(path)


def seeded_inputs(mod, seed: int = SEED):
    """Random tensors of main's parameter shapes and dtypes, the same on every run."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for p in mod["main"].params:
        ty = p.ty if hasattr(p, "ty") else p.struct_info  # TVM 0.27 names it ty
        shape = [int(d) for d in getattr(ty.shape, "values", ty.shape)]
        dtype = np.dtype(str(ty.dtype))
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out.append(rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def _outputs(y) -> List[Any]:
    import numpy as np

    if hasattr(y, "numpy"):
        return [y.numpy()]
    if isinstance(y, (list, tuple)) or hasattr(y, "__len__") and not isinstance(y, np.ndarray):
        return [a for v in y for a in _outputs(v)]
    return [np.asarray(y)]


def digest_model(name: str, vela: Dict[str, Path], target: str, run: bool, progress: bool) -> Dict[str, Any]:
    import tvm
    from tvm import relax

    import tvm_npu

    row: Dict[str, Any] = {"model": name, "kind": "vela" if name in vela else "zoo"}
    t0 = time.perf_counter()
    mod, source = load_model(name, vela, progress)
    row["source"] = os.path.relpath(source, REPO.parent) if source.startswith(str(REPO.parent)) else source
    row["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex = tvm.compile(mod, target=target)
    row["compile_s"] = time.perf_counter() - t0
    try:
        rep = tvm_npu.last_report()
        row["ops_npu"] = sum(p.target == "npu" for p in rep.placements)
        row["ops_total"] = len(rep.placements)
    except Exception:  # noqa: BLE001
        pass
    arts = []
    for sym, blob in npu_artifact_blobs(ex):
        art = tvm_npu.Artifact.deserialize(blob)
        layers = art.producer.get("layers", []) if isinstance(art.producer, dict) else []
        arts.append({
            "symbol": sym,
            "program_sha256": sha256(art.program),
            "consts_sha256": sha256(art.constants),
            "program_bytes": len(art.program),
            "consts_bytes": len(art.constants),
            "instructions": instruction_count(art.program),
            "opcodes": opcode_histogram(art.program),
            "layers": len(art.provenance),
            "scratch_bytes": art.scratch_bytes,
            "io_bytes": art.io_bytes,
            "config": art.config.name,
            "predicted_cycles": sum(int(m.get("predicted_cycles", 0)) for m in layers),
            "emulated_cycles": None,
        })
    row["artifacts"] = arts
    if run:
        t0 = time.perf_counter()
        vm = relax.VirtualMachine(ex, tvm.cpu())
        if arts:
            tvm_npu.enable_trace(vm.module)
        y = vm["main"](*[tvm.runtime.tensor(x) for x in seeded_inputs(mod)])
        row["outputs_sha256"] = sha256(b"".join(o.tobytes() for o in _outputs(y)))
        if arts:
            prof = tvm_npu.profile(vm.module)
            for a in arts:
                c = prof.counters.get(a["symbol"])
                a["emulated_cycles"] = int(c["cycles"]) if c else None
            row["emulated_cycles"] = int(prof.total_cycles)
        row["run_s"] = time.perf_counter() - t0
    row["instructions"] = sum(a["instructions"] for a in arts)
    row["predicted_cycles"] = sum(a["predicted_cycles"] for a in arts)
    return row


def source_info() -> Dict[str, Any]:
    import tvm

    import tvm_npu

    root = Path(tvm_npu.__file__).resolve().parent.parent
    info: Dict[str, Any] = {"tvm_npu": str(root), "tvm": getattr(tvm, "__version__", "?"),
                            "python": sys.version.split()[0]}
    try:
        info["commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        info["dirty"] = bool(dirty)
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def run_isolated(name: str, args) -> Dict[str, Any]:
    """One model in a child process (a crash there is that model's error, not the script's)."""
    with tempfile.TemporaryDirectory(prefix="digest-") as tmp:
        out = Path(tmp) / "one.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--models", name, "--json", str(out), "--quiet",
               "--vela-data", str(args.vela_data), "--target", args.target, "--no-table"]
        if args.no_run:
            cmd.append("--no-run")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if out.is_file():
            rows = json.loads(out.read_text())["models"]
            if rows:
                return rows[0]
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"model": name, "error": f"child exited {proc.returncode}: {' | '.join(tail)}"}


# ---- text ----------------------------------------------------------------------------------------

def _combined(arts: List[Dict[str, Any]], key: str) -> str:
    """The artifact's own sha256 prefix, or for several, the prefix of the sha256 of theirs."""
    return (arts[0][key] if len(arts) == 1 else sha256("".join(a[key] for a in arts).encode()))[:12]


def table(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'model':34s} {'art':>3s} {'instrs':>7s} {'prog B':>8s} {'const B':>9s} {'predicted':>10s} "
             f"{'emulated':>10s} {'program':12s} {'consts':12s} {'compile s':>9s}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:34s} ERROR {r['error'][:150]}")
            continue
        arts = r["artifacts"]
        prog, cons = (_combined(arts, "program_sha256"), _combined(arts, "consts_sha256")) if arts else ("-", "-")
        emu = r.get("emulated_cycles")
        lines.append(f"{r['model']:34s} {len(arts):3d} {r['instructions']:7d} "
                     f"{sum(a['program_bytes'] for a in arts):8d} {sum(a['consts_bytes'] for a in arts):9d} "
                     f"{r['predicted_cycles']:10d} {emu if emu is not None else '-':>10} {prog:12s} {cons:12s} "
                     f"{r['compile_s']:9.2f}")
        if len(arts) > 1:
            for i, a in enumerate(arts):
                lines.append(f"  [{i}] {a['symbol'][:28]:28s} {a['instructions']:7d} {a['program_bytes']:8d} "
                             f"{a['consts_bytes']:9d} {a['predicted_cycles']:10d} "
                             f"{a['emulated_cycles'] if a['emulated_cycles'] is not None else '-':>10} "
                             f"{a['program_sha256'][:12]:12s} {a['consts_sha256'][:12]:12s}")
    lines.append("program / consts: sha256 prefixes (a model with several artifacts: of the concatenated sha256s, "
                 "each artifact below); cycles: predicted by the performance model, emulated on seeded random inputs")
    return "\n".join(lines)


# ---- comparison ------------------------------------------------------------------------------------

ART_FIELDS = [("symbol", "symbol"), ("program_sha256", "program bytes"), ("consts_sha256", "constants"),
              ("instructions", "instructions"), ("predicted_cycles", "predicted cycles"),
              ("emulated_cycles", "emulated cycles"), ("scratch_bytes", "scratch bytes")]


def _short(v) -> str:
    s = str(v)
    return s[:12] if isinstance(v, str) and len(s) == 64 else (s if len(s) <= 40 else s[:37] + "...")


def compare(old: Dict[str, Any], new: Dict[str, Any], only: Optional[List[str]] = None) -> Tuple[List[str], int]:
    """(report lines, number of differing models). Models absent on one side are listed; with
    `only`, just those models are compared."""
    o = {r["model"]: r for r in old["models"]}
    n = {r["model"]: r for r in new["models"]}
    names = only or list(dict.fromkeys([*o, *n]))
    lines, differing = [], 0
    for name in names:
        a, b = o.get(name), n.get(name)
        if a is None or b is None:
            lines.append(f"{name}: only in the {'new' if a is None else 'old'} digest")
            differing += 1
            continue
        diffs: List[str] = []
        if "error" in a or "error" in b:
            if a.get("error") != b.get("error"):
                diffs.append(f"error: {a.get('error', 'none')[:80]!r} -> {b.get('error', 'none')[:80]!r}")
        else:
            aa, ba = a["artifacts"], b["artifacts"]
            if len(aa) != len(ba):
                diffs.append(f"artifacts: {len(aa)} -> {len(ba)}")
            for i, (x, y) in enumerate(zip(aa, ba)):
                for key, what in ART_FIELDS:
                    if x.get(key) != y.get(key):
                        d = f"[{i}] {what}: {_short(x.get(key))} -> {_short(y.get(key))}"
                        if key in ("instructions", "predicted_cycles", "emulated_cycles") and \
                                isinstance(x.get(key), int) and isinstance(y.get(key), int) and x[key]:
                            d += f" ({(y[key] - x[key]) / x[key]:+.2%})"
                        diffs.append(d)
            if a.get("outputs_sha256") and b.get("outputs_sha256") and a["outputs_sha256"] != b["outputs_sha256"]:
                diffs.append(f"outputs: {a['outputs_sha256'][:12]} -> {b['outputs_sha256'][:12]}")
            if a.get("ops_npu") != b.get("ops_npu") or a.get("ops_total") != b.get("ops_total"):
                diffs.append(f"ops on the NPU: {a.get('ops_npu')}/{a.get('ops_total')} -> "
                             f"{b.get('ops_npu')}/{b.get('ops_total')}")
        if diffs:
            differing += 1
            lines.append(f"{name}: DIFFERS")
            lines.extend("    " + d for d in diffs)
        else:
            ct = f" (compile {a.get('compile_s', 0):.2f} s -> {b.get('compile_s', 0):.2f} s)" if "compile_s" in a \
                and "compile_s" in b else ""
            lines.append(f"{name}: identical{ct}")
    return lines, differing


# ---- main ----------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated zoo names and/or Vela file stems (default: all)")
    ap.add_argument("--vela-data", type=Path, default=default_vela_data(),
                    help="directory of the Vela .tflite models (default: ../shared/data/vela from the repo root)")
    ap.add_argument("--target", default="npu")
    ap.add_argument("--json", help="write the digest here")
    ap.add_argument("--compare", metavar="OLD.json", help="compare with an earlier digest; exit 1 if any differ")
    ap.add_argument("--current", metavar="NEW.json", help="with --compare: a saved digest instead of compiling now")
    ap.add_argument("--no-run", action="store_true", help="skip the emulated run (no emulated cycles, no outputs)")
    ap.add_argument("--isolate", action="store_true", help="each model in its own process")
    ap.add_argument("--quiet", action="store_true", help="no download / progress messages")
    ap.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    only = [m for m in args.models.split(",") if m] if args.models else None

    if args.current:
        if not args.compare:
            ap.error("--current needs --compare")
        digest = json.loads(Path(args.current).read_text())
    else:
        vela = vela_files(args.vela_data)
        if not vela and not args.quiet:
            print(f"note: no .tflite in {args.vela_data}; Vela models skipped", file=sys.stderr)
        names = only or [*zoo_names(), *vela]
        digest = {"digest_version": DIGEST_VERSION, "target": args.target, "seed": SEED, "source": source_info(),
                  "models": []}
        if not args.no_table:
            print(f"tvm_npu from {digest['source'].get('tvm_npu')} at {digest['source'].get('commit', '?')[:12]}"
                  f"{' (dirty)' if digest['source'].get('dirty') else ''}", flush=True)
        t_all = time.perf_counter()
        for i, name in enumerate(names):
            if not args.no_table:
                print(f"[{i + 1}/{len(names)}] {name} ...", flush=True)
            t0 = time.perf_counter()
            if args.isolate:
                row = run_isolated(name, args)
            else:
                try:
                    row = digest_model(name, vela, args.target, not args.no_run, not args.quiet)
                except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others still run
                    traceback.print_exc(limit=3)
                    row = {"model": name, "error": f"{type(e).__name__}: {e}"}
            row["wall_s"] = time.perf_counter() - t0
            digest["models"].append(row)
        digest["wall_s"] = time.perf_counter() - t_all
        if not args.no_table:
            print(table(digest["models"]))
            print(f"{len(names)} model(s) in {digest['wall_s']:.1f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
    failures = sum("error" in r for r in digest["models"])
    if args.compare:
        old = json.loads(Path(args.compare).read_text())
        lines, differing = compare(old, digest, only)
        print(f"\ncompared with {args.compare} ({old.get('source', {}).get('commit', '?')[:12]}):")
        print("\n".join(lines))
        print(f"{differing} model(s) differ" if differing else "no difference")
        return 1 if differing else 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
