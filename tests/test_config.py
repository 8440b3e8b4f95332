"""NPUConfig: the presets carry NPU_SPEC.md's numbers; JSON round trips; bad configurations are refused."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tvm_npu.config import DEFAULT_CONFIG_NAME, PRESETS, NPUConfig, get_config

KIB = 1024

# NPU_SPEC.md, "Configurations" (copied by hand so a drift in either place fails here)
SPEC_TABLE = {
    "npu-nano": dict(mac_rows=8, mac_cols=8, int8=64, fp16=32, act=64 * KIB, wgt=32 * KIB, acc=16 * KIB,
                     bw=8, setup=64, lanes=8, clock=400),
    "npu-edge": dict(mac_rows=16, mac_cols=16, int8=256, fp16=128, act=256 * KIB, wgt=128 * KIB, acc=64 * KIB,
                     bw=16, setup=64, lanes=32, clock=1000),
    "npu-pro": dict(mac_rows=32, mac_cols=32, int8=1024, fp16=512, act=1024 * KIB, wgt=512 * KIB,
                    acc=256 * KIB, bw=32, setup=64, lanes=64, clock=1200),
}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_presets_match_the_spec(name):
    c, s = PRESETS[name], SPEC_TABLE[name]
    assert c.name == name
    assert (c.mac_rows, c.mac_cols) == (s["mac_rows"], s["mac_cols"])
    assert c.int8_macs_per_cycle == s["int8"]
    assert c.fp16_macs_per_cycle == s["fp16"]
    assert (c.act_sram_bytes, c.wgt_sram_bytes, c.acc_sram_bytes) == (s["act"], s["wgt"], s["acc"])
    assert (c.sram_bytes(0), c.sram_bytes(1), c.sram_bytes(2)) == (s["act"], s["wgt"], s["acc"])
    assert c.dma_bytes_per_cycle == s["bw"]
    assert c.dma_setup_cycles == s["setup"]
    assert c.vector_lanes == s["lanes"]
    assert c.clock_mhz == s["clock"]
    # the spec's fixed costs: 8 cycles vector issue overhead, 1 control cycle, fp16/int16 at half rate
    assert (c.vector_issue_cycles, c.control_cycles, c.half_rate_factor) == (8, 1, 2)


def test_exactly_three_presets_and_the_default():
    assert sorted(PRESETS) == ["npu-edge", "npu-nano", "npu-pro"]
    assert DEFAULT_CONFIG_NAME == "npu-edge"
    assert get_config() is PRESETS["npu-edge"]


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["npu-edge"].mac_rows = 4


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name, tmp_path):
    c = PRESETS[name]
    assert NPUConfig.from_json(c.to_json()) == c
    assert NPUConfig.from_dict(json.loads(c.to_json())) == c
    path = tmp_path / f"{name}.json"
    c.save(path)
    assert NPUConfig.from_json(path) == c
    assert NPUConfig.from_json(str(path)) == c
    assert get_config(str(path)) == c
    assert get_config(path) == c
    assert get_config(c.to_json()) == c
    assert get_config(c.to_dict()) == c
    assert get_config(name) is c
    assert get_config(c) is c


def test_to_json_is_deterministic_and_complete():
    c = PRESETS["npu-nano"]
    d = json.loads(c.to_json())
    assert set(d) == {f.name for f in dataclasses.fields(NPUConfig)}
    assert c.to_json() == c.replace().to_json()
    assert list(d) == sorted(d)
    assert NPUConfig.integer_fields() == [f.name for f in dataclasses.fields(NPUConfig)][1:]


def test_custom_config():
    c = NPUConfig("my-npu", mac_rows=4, mac_cols=12, act_sram_bytes=48 * KIB, wgt_sram_bytes=16,
                  acc_sram_bytes=32 * KIB, dma_bytes_per_cycle=3, dma_setup_cycles=7, vector_lanes=5,
                  clock_mhz=123, vector_issue_cycles=2, control_cycles=3, half_rate_factor=4)
    assert c.int8_macs_per_cycle == 48 and c.fp16_macs_per_cycle == 12
    assert get_config(c.to_dict()) == c
    assert NPUConfig.from_json(c.to_json()) == c
    d = PRESETS["npu-edge"].to_dict()
    d.pop("vector_issue_cycles"), d.pop("control_cycles"), d.pop("half_rate_factor")
    assert get_config(d) == PRESETS["npu-edge"]  # fields with defaults may be omitted


def test_replace_revalidates():
    c = PRESETS["npu-edge"].replace(name="edge-wide", vector_lanes=128)
    assert c.vector_lanes == 128 and PRESETS["npu-edge"].vector_lanes == 32
    with pytest.raises(ValueError, match="vector_lanes"):
        PRESETS["npu-edge"].replace(vector_lanes=0)


@pytest.mark.parametrize("changes,match", [
    (dict(name=""), "name"),
    (dict(name=3), "name"),
    (dict(mac_rows=0), "mac_rows"),
    (dict(mac_cols=-4), "mac_cols"),
    (dict(dma_bytes_per_cycle=2**31), "dma_bytes_per_cycle"),
    (dict(vector_lanes=2.0), "vector_lanes must be an integer"),
    (dict(clock_mhz=True), "clock_mhz must be an integer"),
    (dict(clock_mhz="1000"), "clock_mhz must be an integer"),
    (dict(act_sram_bytes=1000), "multiple of 16"),
    (dict(wgt_sram_bytes=24), "multiple of 16"),
    (dict(acc_sram_bytes=8), "multiple of 16"),
    (dict(half_rate_factor=0), "half_rate_factor"),
    (dict(control_cycles=0), "control_cycles"),
])
def test_bad_configs_are_refused(changes, match):
    d = PRESETS["npu-edge"].to_dict()
    d.update(changes)
    with pytest.raises(ValueError, match=match):
        NPUConfig.from_dict(d)
    with pytest.raises(ValueError, match=match):
        get_config(json.dumps(d))


def test_unknown_and_missing_fields_are_refused():
    d = PRESETS["npu-edge"].to_dict()
    with pytest.raises(ValueError, match="unknown NPUConfig field"):
        NPUConfig.from_dict({**d, "mac_depth": 3})
    d.pop("mac_rows")
    with pytest.raises(ValueError, match=r"missing field\(s\): \['mac_rows'\]"):
        NPUConfig.from_dict(d)


def test_unknown_names_and_bad_json():
    with pytest.raises(ValueError, match="unknown NPU configuration 'npu-giga'"):
        get_config("npu-giga")
    with pytest.raises(ValueError):
        get_config("{not json")
