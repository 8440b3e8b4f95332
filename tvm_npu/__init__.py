"""tvm_npu: compile models for the NPU from Apache TVM.

`import tvm_npu` registers the NPU with TVM: the target tags (`npu`, `npu-nano`, `npu-edge`,
`npu-pro`), the `npu.*` pattern table, the `relax.ext.npu` code generator, the runtime module
loader and the pipeline hook that makes `tvm.compile(mod, target="npu")` partition.
"""

from .config import PRESETS, NPUConfig, get_config
from .artifact import Artifact, ArtifactError
from . import errors
from .errors import (CompileError, FrontendError, InputError, ModelFileError, ModelLoadError, NPUError, ProfileError,
                     RunError, ShapeError, UnsupportedOperatorError, UsageError)
from . import isa

from .version import __version__


def _register() -> None:
    import npu_emulator

    from . import provenance, target
    from .frontend import onnx_ops
    from .relay_ext import codegen, patterns

    provenance.install()  # frontends record which model operator each Relax call came from
    onnx_ops.install()  # our converters in the ONNX frontend (tvm_npu/frontend/onnx_ops.py)
    npu_emulator.load_library()  # the emulator and the "npu" runtime module loader live in one library
    patterns.register()
    codegen.register()
    target.register()


_register()

from .target import is_npu_target, npu_target  # noqa: E402
from .driver import compile_function, partition_for_npu  # noqa: E402
from .options import CompileOptions, CpuModel, compile_options, current_options  # noqa: E402
from .report import PartitionReport, last_report, report_of  # noqa: E402
from .profiling import enable_trace, profile  # noqa: E402
from .tuning import tune  # noqa: E402  (MetaSchedule is imported on the first call)
from .runtime_module import NumericsError, NumericsWarning  # noqa: E402

__all__ = ["PRESETS", "NPUConfig", "get_config", "Artifact", "ArtifactError", "isa", "npu_target", "last_report",
           "report_of", "PartitionReport", "compile_options", "current_options", "CompileOptions", "CpuModel",
           "enable_trace", "profile", "tune", "partition_for_npu", "compile_function", "__version__", "errors", "NPUError",
           "UsageError", "InputError", "ShapeError", "ModelLoadError", "ModelFileError", "UnsupportedOperatorError",
           "FrontendError", "ProfileError", "CompileError", "RunError", "NumericsError", "NumericsWarning"]

from .relay_ext import compat as relay_compat  # noqa: E402

relay_compat.install(last_report=last_report, is_npu_target=is_npu_target)  # tvm.relay etc. (docs/RELAY_COMPAT.md)
