"""The errors tvm_npu raises for bad input: one typed hierarchy for the CLI and the Python API.

Every user-facing failure is an `NPUError` that names what was wrong (`file`, `operator`: a model
node's name and type, or a TFLite operator's index and type), says why (`reason`) and, where one
exists, how to fix it (`fix`). `str(e)` is the one line the CLI prints; `e.exit_code` is its exit
status (docs/ERRORS.md lists every case):

    NPUError                        1
      UsageError                    2   bad options: target, configuration, plan, output path
        UnknownZooModelError        2     a zoo model name the zoo does not have
      InputError                    2   --shape / --input / arrays that do not fit the model
      ModelLoadError                3   a model file that cannot be loaded ...
        ShapeError                  2     ... at the shapes given (unknown input, rank, dims, size)
        ModelFileError              3     ... because it is missing, unreadable or malformed
          ModelFileNotFoundError    3
        UnsupportedOperatorError    4     ... because an operator has no converter (named)
        FrontendError               4     ... because TVM's frontend failed on it (its reason, one line)
      ArtifactError                 5   (tvm_npu.artifact) a malformed or corrupted NPU artifact
      ProfileError                  6   a profile asked for before anything ran
      CompileError                  7   compiling an imported model failed (the compiler's reason)
      RunError                      8   a run refused by policy (fp16 overflow with fp16_overflow="error")
      InternalError                70   anything else: a bug of ours; --debug shows the traceback

The classes that replace a built-in exception keep it as a base (ModelLoadError and the usage and
input errors are ValueErrors, ModelFileNotFoundError a FileNotFoundError) so existing handlers work.
This module imports nothing heavy: the CLI's error boundary uses it before TVM is loaded.
"""

from __future__ import annotations

import sys
from typing import Optional

__all__ = ["NPUError", "UsageError", "UnknownZooModelError", "InputError", "ModelLoadError", "ShapeError", "ModelFileError", "ModelFileNotFoundError",
           "UnsupportedOperatorError", "FrontendError", "ProfileError", "CompileError", "RunError", "InternalError", "as_npu_error",
           "one_line"]


class NPUError(Exception):
    """Base of tvm_npu's errors. `str(e)` is one line: where, what, why and the fix."""

    exit_code = 1

    def __init__(self, reason: str, *, file: Optional[str] = None, operator: Optional[str] = None,
                 fix: Optional[str] = None):
        self.reason, self.file, self.operator, self.fix = reason, file, operator, fix
        super().__init__(self._message())

    def __str__(self) -> str:  # (KeyError's own would quote the message)
        return self._message()

    def _where(self) -> str:
        return self.file or ""

    def _message(self) -> str:
        parts = [p for p in (self._where(), self.operator, self.reason) if p]
        text = ": ".join(parts)
        return f"{text}; fix: {self.fix}" if self.fix else text

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "file": self.file, "operator": self.operator, "reason": self.reason,
                "fix": self.fix, "message": str(self), "exit_code": self.exit_code}


class UsageError(NPUError, ValueError):
    """An option that cannot be used: unknown target or configuration, bad plan file, an output path
    that cannot be written, an unknown zoo model."""

    exit_code = 2


class UnknownZooModelError(UsageError, KeyError):
    """`tvm-npu zoo NAME` / model_zoo.get_model(NAME) of a name the zoo does not have (a KeyError too)."""


class InputError(NPUError, ValueError):
    """Shapes or input arrays that do not fit the model (count, rank, dimensions, dtype, size)."""

    exit_code = 2


class ModelLoadError(NPUError, ValueError):
    """A model that cannot be loaded: "cannot load model FILE: [operator: ]reason"."""

    exit_code = 3

    def __init__(self, what: str, reason: str, *, operator: Optional[str] = None, fix: Optional[str] = None):
        self.what = what
        super().__init__(reason, file=what, operator=operator, fix=fix)

    def _where(self) -> str:
        return f"cannot load model {self.file}"


class ShapeError(ModelLoadError):
    """Input shapes that do not fit the model: an unknown input name, another rank, a dimension <= 0,
    a size no machine holds, or a dynamic input left without a shape."""

    exit_code = 2


class ModelFileError(ModelLoadError):
    """The model file is missing, unreadable, or not a well-formed model of its format."""


class ModelFileNotFoundError(ModelFileError, FileNotFoundError):
    """The model file does not exist (a FileNotFoundError too, as opening it would have raised)."""


class UnsupportedOperatorError(ModelLoadError):
    """An operator of the model that no converter handles (ONNX node name and type; TFLite operator
    index and type, with the custom code of a CUSTOM operator)."""

    exit_code = 4


class FrontendError(ModelLoadError):
    """TVM's frontend failed on a model that passed our checks: its reason, in one line."""

    exit_code = 4


class ProfileError(NPUError, RuntimeError):
    """A profile asked for before any NPU function ran (or of a module without NPU functions)."""

    exit_code = 6


class CompileError(NPUError, RuntimeError):
    """Compiling a model that imported cleanly failed: the target and the compiler's reason."""

    exit_code = 7


class RunError(NPUError, RuntimeError):
    """A run refused by policy: compile_options(fp16_overflow="error") and a layer's results overflowed
    fp16 (tvm_npu.runtime_module.NumericsError, which names the layer)."""

    exit_code = 8


class InternalError(NPUError, RuntimeError):
    """An unexpected exception at the error boundary: a bug of ours (or of TVM), never a user error."""

    exit_code = 70


def one_line(e: BaseException) -> str:
    """`Type: message` of any exception in one line: the first line of its message, or the last one
    when the message carries a (TVM C++) traceback first."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = (lines[-1] if lines[0].startswith("Traceback") else lines[0]) if lines else ""
    return f"{type(e).__name__}: {text}".rstrip(": ")


def as_npu_error(e: BaseException) -> NPUError:
    """The error boundary's view of an exception: ours as it is, a ValueError or OSError of an option
    as a UsageError, anything else as an InternalError naming its type and first line."""
    if isinstance(e, NPUError):
        return e
    runtime = sys.modules.get("tvm_npu.runtime_module")  # (imported once anything ran)
    if runtime is not None and isinstance(e, getattr(runtime, "NumericsError", ())):
        return RunError(str(e).strip().splitlines()[0])
    if isinstance(e, (ValueError, OSError)):
        text = str(e).strip().splitlines()
        return UsageError(text[0] if text else type(e).__name__)
    return InternalError(f"internal error ({one_line(e)})",
                         fix="rerun with --debug for the traceback and report it")
