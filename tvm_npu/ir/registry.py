"""The registry of NPU composites: each `npu.*` pattern as data, so no code parses a name.

An `OpSpec` says everything later stages need to know about a composite: its lowering family
(`kind`), whether it runs on the integer datapath, whether it is matched as a quantised (QDQ)
region before constant folding, the row of the supported-operator table it belongs to, its
pattern and role annotations, and the function that reads a match into an `OpDesc`.
`relay_ext/patterns.py` fills the registry when tvm_npu is imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from .desc import OpDesc, Unsupported


@dataclasses.dataclass(frozen=True)
class OpSpec:
    name: str  # the composite name: pattern name, codegen key and docs row (npu.<op>[_<fusion>])
    kind: str  # lowering family, as OpDesc.kind
    doc_kind: str  # the section of docs/SUPPORTED_OPS.md
    pattern: Any  # relax DFPattern
    annotations: Mapping[str, Any]  # role -> sub-pattern ("root", "input", "weight", ...)
    describe: Callable[["OpSpec", Mapping[str, Any]], OpDesc]  # (spec, role -> matched expr) -> OpDesc
    integer: bool = False  # integer datapath (int8 operands)
    quantised_region: bool = False  # matched before constant folding as a dequantize..quantize region:
    #                                 refusing it keeps the whole region on the CPU (never run in fp16)
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # family data (pool mode, arity ...)


_REGISTRY: Dict[str, OpSpec] = {}


def register(specs: List[OpSpec]) -> None:
    """Adds specs in increasing priority (later ones are tried first by the partitioner)."""
    for s in specs:
        _REGISTRY[s.name] = s


def lookup(name: str) -> OpSpec:
    spec = _REGISTRY.get(str(name))
    if spec is None:
        raise Unsupported(f"composite {name} is not in the NPU registry")
    return spec


def find(name: str) -> Optional[OpSpec]:
    return _REGISTRY.get(str(name))


def specs() -> Iterator[OpSpec]:
    """All specs in registration (increasing priority) order."""
    return iter(list(_REGISTRY.values()))
