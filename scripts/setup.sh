#!/usr/bin/env bash
# Creates .venv (if missing) and installs tvm_npu with its pinned dependencies; builds the C++ parts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
# [torch]: torch==2.13.0 for the PyTorch frontend and its tests (a CPU wheel on these machines)
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,torch]"
test -f npu_emulator/_lib/libnpu_emulator.so || { echo 'setup: the emulator library was not built' >&2; exit 1; }
.venv/bin/python -c "import tvm_npu; print('tvm_npu', tvm_npu.__version__, 'installed')"
