#!/usr/bin/env python3
"""Per zoo model: compile time, share of MACs on the NPU, emulated NPU cycles, roofline cycles and
efficiency, the performance model's error, and host wall time beside the reference runtime's,
all measured in the same run.

    python scripts/bench_models.py [--models a,b] [--target npu] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bench(model, target: str, repeat: int, progress: bool) -> dict:
    import tvm
    from tvm import relax

    import tvm_npu
    from model_zoo.runner import load_relax, macs_by_binding, model_path, reference_runner

    path = model_path(model, progress=progress)  # (fetched, or derived from the fetched file: int8 QDQ)
    sample = model.samples(True, progress)[0]
    mod, out_names = load_relax(model, path)
    t0 = time.perf_counter()
    ex = tvm.compile(mod, target=target)
    compile_s = time.perf_counter() - t0
    report = tvm_npu.last_report()
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = tvm.runtime.tensor(sample.array)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        vm["main"](x)
        times.append(time.perf_counter() - t0)
    tvm_npu.enable_trace(vm.module)
    vm["main"](x)  # one traced run for the per-layer figures
    prof = tvm_npu.profile(vm.module)
    ref = reference_runner(model, path, out_names)
    ref_times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ref(sample.array)
        ref_times.append(time.perf_counter() - t0)
    macs_total = sum(macs_by_binding(mod).values())
    macs_npu = sum(int(f["macs"]) for f in report.functions.values() if f.get("offloaded"))
    cycles = prof.total_cycles
    layer_cycles = sum(r.cycles for r in prof.layers)
    roofline = sum(r.roofline_cycles for r in prof.layers)
    predicted = sum(r.predicted_cycles for r in prof.layers)
    return {
        "model": model.name, "target": target, "config": prof.config, "compile_s": compile_s,
        "ops_npu": sum(p.target == "npu" for p in report.placements), "ops_total": len(report.placements),
        "macs_total": macs_total, "macs_npu": macs_npu, "macs_share": macs_npu / macs_total if macs_total else 0.0,
        "npu_cycles": cycles, "npu_us": cycles / prof.clock_mhz if prof.clock_mhz else 0.0,
        "roofline_cycles": roofline, "efficiency": roofline / layer_cycles if layer_cycles else 0.0,
        "predicted_cycles": predicted,
        "model_error": (predicted - layer_cycles) / layer_cycles if layer_cycles else 0.0,
        "wall_ms": statistics.median(times) * 1e3, "ref_wall_ms": statistics.median(ref_times) * 1e3,
        "reference": model.reference,
    }


def main() -> int:
    from model_zoo.registry import MODELS, get_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated names (default: all)")
    ap.add_argument("--target", default="npu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else [m for m in MODELS]
    rows, failures = [], 0
    for name in names:
        try:
            rows.append(bench(get_model(name), args.target, args.repeat, not args.quiet))
        except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others still run
            failures += 1
            rows.append({"model": name, "error": f"{type(e).__name__}: {e}"})
    head = f"{'model':26s} {'compile s':>9s} {'NPU ops':>9s} {'NPU MACs':>8s} {'NPU cycles':>11s} {'roofline':>10s} " \
           f"{'eff':>6s} {'model err':>9s} {'host ms':>8s} {'ref ms':>7s} {'host/ref':>8s}"
    print(head)
    for r in rows:
        if "error" in r:
            print(f"{r['model']:26s} ERROR {r['error'][:100]}")
            continue
        print(f"{r['model']:26s} {r['compile_s']:9.1f} {r['ops_npu']:4d}/{r['ops_total']:<4d} {r['macs_share']:8.1%} "
              f"{r['npu_cycles']:11d} {r['roofline_cycles']:10.0f} {r['efficiency']:6.1%} {r['model_error']:+9.2%} "
              f"{r['wall_ms']:8.1f} {r['ref_wall_ms']:7.2f} {r['wall_ms'] / max(r['ref_wall_ms'], 1e-9):8.1f}")
    print("NPU cycles are emulated; host ms is the VM plus the emulator on this machine, beside the reference "
          "runtime's ms for the same input.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
