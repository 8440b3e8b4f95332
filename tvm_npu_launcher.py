"""The `tvm-npu` console script: runs tvm_npu/cli.py without importing the tvm_npu package, so that
`tvm-npu --help` and the zoo listing start in a fraction of a second. The package (and with it TVM
and the NPU's registration) is imported by the first command that needs it, through cli.py's own
relative imports (`from .importer import load` imports `tvm_npu` first).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _cli():
    if "tvm_npu" in sys.modules:  # already imported: nothing to save
        import tvm_npu.cli

        return tvm_npu.cli
    spec = importlib.util.find_spec("tvm_npu")  # locates the package without running its __init__
    path = Path(next(iter(spec.submodule_search_locations))) / "cli.py"
    cli_spec = importlib.util.spec_from_file_location("tvm_npu.cli", path)
    module = importlib.util.module_from_spec(cli_spec)
    module.__package__ = "tvm_npu"  # its relative imports resolve in the real package, when they run
    sys.modules["tvm_npu.cli"] = module
    cli_spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    return _cli().main(argv)


if __name__ == "__main__":
    sys.exit(main())
