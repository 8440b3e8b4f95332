"""tvm_npu: compile models for the NPU from Apache TVM.

The foundation layer (configuration, ISA, artifact) is importable without TVM's compiler stack;
the TVM integration registers itself when the compiler modules are imported.
"""

from .config import PRESETS, NPUConfig, get_config
from .artifact import Artifact, ArtifactError
from . import isa

__version__ = "0.1.0"
__all__ = ["PRESETS", "NPUConfig", "get_config", "Artifact", "ArtifactError", "isa", "__version__"]
