"""The `tvm-npu` command line: configurations, assembler, disassembler and artifact tools."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .artifact import MAGIC as ARTIFACT_MAGIC, Artifact
from .config import PRESETS, get_config
from .isa import Program, assemble, disassemble


def _cmd_config(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else sorted(PRESETS)
    cfgs = [get_config(n).to_dict() for n in names]
    print(json.dumps(cfgs[0] if args.name else cfgs, indent=2, sort_keys=True))
    return 0


def _cmd_asm(args: argparse.Namespace) -> int:
    Path(args.output).write_bytes(assemble(Path(args.input).read_text()))
    return 0


def _program_bytes(path: str) -> bytes:
    blob = Path(path).read_bytes()
    return Artifact.deserialize(blob).program if blob[:4] == ARTIFACT_MAGIC else blob


def _cmd_disasm(args: argparse.Namespace) -> int:
    text = disassemble(_program_bytes(args.input))
    if args.number:
        text = "\n".join(f"{i:6d}  {line}" for i, line in enumerate(text.splitlines())) + "\n"
    sys.stdout.write(text)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    art = Artifact.deserialize(Path(args.input).read_bytes())
    meta = art.meta()
    meta["instructions"] = len(Program.decode(art.program))
    meta["program_bytes"] = len(art.program)
    meta["constant_bytes"] = len(art.constants)
    meta["golden"] = sorted(art.golden) if art.golden else []
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    print(f"artifact for {art.config.name} (ISA v{meta['isa_version']}, format v{meta['format_version']})")
    print(f"  program: {meta['instructions']} instructions, {len(art.program)} bytes; constants {len(art.constants)} "
          f"bytes; scratch {art.scratch_bytes} bytes; IO region {art.io_bytes} bytes")
    for t in art.io:
        q = f" quant scale={list(t.quant.scale)[:4]} zp={list(t.quant.zero_point)[:4]}" if t.quant else ""
        print(f"  {t.kind:6s} {t.name}: {t.dtype}{list(t.shape)} {t.layout} @ {t.offset}{q}")
    for p in art.provenance:
        print(f"  [{p.start:5d}, {p.end:5d}) {p.op:28s} <- {p.source}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    art = Artifact.deserialize(Path(args.input).read_bytes())
    diffs = art.verify()
    for name, d in diffs.items():
        print(f"{name}: max |npu - golden| = {d}")
    return 0 if all(d == 0 for d in diffs.values()) else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tvm-npu", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("config", help="print a configuration (or all presets) as JSON")
    p.add_argument("name", nargs="?", help="preset name or JSON file")
    p.set_defaults(func=_cmd_config)
    p = sub.add_parser("asm", help="assemble a text program into binary")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=_cmd_asm)
    p = sub.add_parser("disasm", help="disassemble a binary program or an artifact's program")
    p.add_argument("input")
    p.add_argument("-n", "--number", action="store_true", help="prefix instruction indices")
    p.set_defaults(func=_cmd_disasm)
    p = sub.add_parser("inspect", help="describe an artifact (IO table, provenance, sizes)")
    p.add_argument("input")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("verify", help="replay an artifact's golden inputs on the emulator")
    p.add_argument("input")
    p.set_defaults(func=_cmd_verify)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"tvm-npu {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
