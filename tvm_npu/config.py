"""The NPU hardware configuration: one frozen object read by the ISA, emulator, cost model and compiler."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Union

__all__ = ["NPUConfig", "PRESETS", "get_config", "DEFAULT_CONFIG_NAME"]

DEFAULT_CONFIG_NAME = "npu-edge"

_KIB = 1024


@dataclasses.dataclass(frozen=True)
class NPUConfig:
    """One NPU configuration (see NPU_SPEC.md, "Configurations").

    Every integer field is part of the hardware contract and travels inside artifacts, so the
    emulator runs a program with exactly the machine it was compiled for.
    """

    name: str
    mac_rows: int  # R of the R x C MAC array
    mac_cols: int  # C of the R x C MAC array
    act_sram_bytes: int
    wgt_sram_bytes: int
    acc_sram_bytes: int
    dma_bytes_per_cycle: int
    dma_setup_cycles: int
    vector_lanes: int  # L: elements per cycle of the vector unit
    clock_mhz: int
    vector_issue_cycles: int = 8  # fixed overhead of one vector pass
    control_cycles: int = 1  # token signal/wait, barrier, end
    half_rate_factor: int = 2  # fp16 and int16 activations run at half the int8 MAC rate

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("NPUConfig.name must be a non-empty string")
        for f in dataclasses.fields(self):
            if f.name == "name":
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"NPUConfig.{f.name} must be an integer, got {v!r}")
            if not 1 <= v < 2**31:
                raise ValueError(f"NPUConfig.{f.name} must be in [1, 2^31), got {v}")
        for sram in ("act_sram_bytes", "wgt_sram_bytes", "acc_sram_bytes"):
            if getattr(self, sram) % 16:
                raise ValueError(f"NPUConfig.{sram} must be a multiple of 16 bytes (SRAM rows are 16-byte aligned)")

    # ---- derived quantities -------------------------------------------------------------
    @property
    def int8_macs_per_cycle(self) -> int:
        return self.mac_rows * self.mac_cols

    @property
    def fp16_macs_per_cycle(self) -> float:
        return self.int8_macs_per_cycle / self.half_rate_factor

    def sram_bytes(self, space: int) -> int:
        """Size of an SRAM by its ISA space number (0 ACT, 1 WGT, 2 ACC)."""
        return (self.act_sram_bytes, self.wgt_sram_bytes, self.acc_sram_bytes)[space]

    # ---- serialisation -------------------------------------------------------------------
    @classmethod
    def integer_fields(cls) -> list[str]:
        """The numeric fields, in declaration order (the C++ emulator's Config struct mirrors these)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "name"]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NPUConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NPUConfig field(s): {sorted(unknown)}")
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING} - set(d)
        if missing:
            raise ValueError(f"NPUConfig is missing field(s): {sorted(missing)}")
        return cls(**dict(d))

    @classmethod
    def from_json(cls, text_or_path: Union[str, Path]) -> "NPUConfig":
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        return cls.from_dict(json.loads(text))

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def replace(self, **changes: Any) -> "NPUConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, NPUConfig] = {
    c.name: c
    for c in (
        NPUConfig("npu-nano", 8, 8, 64 * _KIB, 32 * _KIB, 16 * _KIB, 8, 64, 8, 400),
        NPUConfig("npu-edge", 16, 16, 256 * _KIB, 128 * _KIB, 64 * _KIB, 16, 64, 32, 1000),
        NPUConfig("npu-pro", 32, 32, 1024 * _KIB, 512 * _KIB, 256 * _KIB, 32, 64, 64, 1200),
    )
}


def get_config(config: Union[None, str, Path, Mapping[str, Any], NPUConfig] = None) -> NPUConfig:
    """Resolve a preset name, a JSON file or string, a dict, or an NPUConfig to an NPUConfig."""
    if config is None:
        return PRESETS[DEFAULT_CONFIG_NAME]
    if isinstance(config, NPUConfig):
        return config
    if isinstance(config, Mapping):
        return NPUConfig.from_dict(config)
    text = str(config)
    if text == "npu":  # the plain target tag means the default configuration
        return PRESETS[DEFAULT_CONFIG_NAME]
    if text in PRESETS:
        return PRESETS[text]
    if text.lstrip().startswith("{") or Path(text).is_file():
        return NPUConfig.from_json(text)
    raise ValueError(f"unknown NPU configuration {text!r}; presets are {sorted(PRESETS)} "
                     "or pass a JSON file / dict of NPUConfig fields")
