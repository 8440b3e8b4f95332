"""Everything derived from spec.py stays in sync: docs/ISA.md's encoding tables and the C++ header."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tvm_npu.isa import spec

ROOT = Path(__file__).resolve().parents[2]


def test_isa_doc_tables_are_up_to_date():
    try:
        doc = importlib.import_module("tvm_npu.isa.doc")
    except ImportError as e:
        pytest.fail(f"docs/ISA.md promises a generator `python -m tvm_npu.isa.doc`: {e}")
    text = (ROOT / "docs" / "ISA.md").read_text()
    assert doc.BEGIN in text and doc.END in text, "docs/ISA.md lacks the generated encoding tables"
    assert doc.render(text) == text, "docs/ISA.md is out of date: run python -m tvm_npu.isa.doc"


def test_isa_doc_table_rows_match_the_spec():
    text = (ROOT / "docs" / "ISA.md").read_text()
    for op in spec.OPCODES:
        row = re.search(rf"^\| 0x{op.code:02X} \| `{re.escape(op.mnemonic)}` \|[^|]*\|[^|]*\| (\d+) \|", text, re.M)
        assert row, f"no encoding row for {op.mnemonic}"
        assert int(row.group(1)) == op.fmt.size


def test_every_mnemonic_has_semantics_in_the_doc():
    text = (ROOT / "docs" / "ISA.md").read_text()
    semantics = text.split("## Cycle model")[0]
    for op in spec.OPCODES:
        assert f"`{op.mnemonic}" in semantics, op.mnemonic


def test_cpp_header_mirrors_the_spec():
    gen = importlib.import_module("tvm_npu.isa.gen_cpp")
    header = gen.generate()
    assert f"kIsaVersion = {spec.ISA_VERSION};" in header
    for op in spec.OPCODES:
        assert f"= 0x{op.code:02X}" in header, op.mnemonic
    for fmt in spec.FORMATS:
        for operand in fmt.operands:
            assert re.search(rf"\b{operand.name};", header), (fmt.name, operand.name)
    built = ROOT / "npu_emulator" / "src" / "isa_gen.h"
    if built.exists():
        assert built.read_text() == header, "npu_emulator/src/isa_gen.h is stale: pip install -e . rebuilds it"
