#!/usr/bin/env bash
# Creates .venv (if missing) and installs tvm_npu with its pinned dependencies; builds the C++ parts.
# A second run with nothing changed returns in a few seconds: the install is skipped while the stamp
# .venv/.tvm_npu-setup.sha256 matches the hash of what the install depends on (this script,
# setup.py, pyproject.toml, the C++ sources and the ISA generator, the Python version) and the
# installed package still imports. SETUP_FORCE=1 reinstalls anyway. A fresh clone has no .venv and
# no stamp: the full install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.tvm_npu-setup.sha256

install_inputs_hash() {
  {
    "$PY" --version 2>&1
    sha256sum scripts/setup.sh setup.py pyproject.toml tvm_npu/isa/spec.py tvm_npu/isa/gen_cpp.py tvm_npu/config.py
    # the C++ sources (isa_gen.h is generated from spec.py by the build)
    find npu_emulator/src tvm_npu/runtime_module -type f \( -name '*.cc' -o -name '*.h' \) ! -name 'isa_gen.h' \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}

want=$(install_inputs_hash)
if [ "${SETUP_FORCE:-0}" != 1 ] && [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && [ -f npu_emulator/_lib/libnpu_emulator.so ] && [ -x .venv/bin/tvm-npu ] \
   && .venv/bin/python -c "import tvm_npu" 2>/dev/null; then
  echo "setup: up to date (nothing changed since the last install; SETUP_FORCE=1 reinstalls)"
  exit 0
fi

rm -f "$STAMP"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
# [torch]: torch==2.13.0 for the PyTorch frontend and its tests (a CPU wheel on these machines)
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,torch]"
test -f npu_emulator/_lib/libnpu_emulator.so || { echo 'setup: the emulator library was not built' >&2; exit 1; }
.venv/bin/python -c "import tvm_npu; print('tvm_npu', tvm_npu.__version__, 'installed')"
echo "$want" > "$STAMP"
