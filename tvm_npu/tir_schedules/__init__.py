"""TensorIR path of the MAC operators: PrimFuncs (kernels.py), NPU tensor intrinsics
(intrinsics.py), the default schedule (default.py) and the walker that reads the scheduled TIR
back as tile events for the code generator (walker.py)."""

from .default import schedule
from .walker import Event, Walker

__all__ = ["schedule", "Event", "Walker"]
