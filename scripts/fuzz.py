#!/usr/bin/env python
"""Long fuzz runs of tvm_npu's input paths (tests/fuzz/harness.py): the ONNX and TFLite importers
(with the NPU's outputs compared against the CPU build's), the artifact loader and the command line.

    scripts/fuzz.py --target onnx --n 1000            # one target
    scripts/fuzz.py --n 300 --json fuzz.json          # every target; counts as text and JSON

Each input is counted as error (a typed error of ours), success, skipped (compiled but too large to
run in the emulator), mismatch, crash or hang; crashes,
hangs and mismatches are listed and their inputs saved (--save, default fuzz-findings/) so that they
can join tests/fuzz/corpus/<target>/ as regression inputs. Exit status 1 when there is any crash,
hang or mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fuzz"))

import harness  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=harness.TARGETS, action="append",
                    help="a fuzz target (repeatable; default: all)")
    ap.add_argument("--n", type=int, default=300, help="inputs per target (the corpus first, then mutations)")
    ap.add_argument("--seed", type=int, default=0, help="the mutations' random seed")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--json", metavar="PATH", help='write the results as JSON here ("-": stdout)')
    ap.add_argument("--save", metavar="DIR", default="fuzz-findings", help="where crashing inputs are saved")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    results = []
    for target in args.target or harness.TARGETS:
        r = harness.fuzz(target, args.n, args.seed, args.timeout, Path(args.save), log)
        results.append(r)
        c = r["counts"]
        print(f"{target:9s} n={r['n']:5d}  error {c['error']:5d}  success {c['success']:5d}  skipped {c['skipped']:3d}  mismatch "
              f"{c['mismatch']:3d}  crash {c['crash']:3d}  hang {c['hang']:3d}   ({r['seconds']:.0f} s)", flush=True)
        for kind, k in r["kinds"].items():
            print(f"    {k:5d}  {kind}")
        for f in r["findings"]:
            detail = (f.get("detail") or "").strip().splitlines()
            print(f"    ! {f['outcome']} {f['kind']} on {f['input']}: {detail[-1] if detail else ''}"
                  + (f" -> {f['saved']}" if "saved" in f else ""))
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)
    return 1 if any(r["counts"][o] for r in results for o in ("crash", "hang", "mismatch")) else 0


if __name__ == "__main__":
    sys.exit(main())
