"""NPU targets for tvm.compile: target tags, and the hook that partitions for targets with the "npu" key.

A target is an NPU target when its keys contain "npu". The tags `npu` (= npu-edge), `npu-nano`,
`npu-edge` and `npu-pro` are registered; a custom configuration travels in the target's `model`
attribute, either as a preset name or as the configuration's JSON (`npu_target(config)` builds one).

tvm.compile(mod, target) runs the pipeline `relax.get_pipeline("default")` for CPU-like targets.
We wrap that pipeline's factory (and "default_build") so that, when the current target is an NPU
target, the NPU partitioning runs first; for every other target the original pipeline runs unchanged.
An explicit `relax_pipeline=` other than "default" bypasses the NPU path (use "npu" to ask for it).
"""

from __future__ import annotations

from typing import Optional, Union

import tvm
from tvm import relax

from .config import PRESETS, NPUConfig, get_config
from .driver import partition_for_npu

NPU_KEY = "npu"
_HOOK_ATTR = "_tvm_npu_original"


def npu_target(config: Union[str, NPUConfig, None] = None) -> tvm.target.Target:
    """An NPU target for a preset name or a custom NPUConfig."""
    cfg = get_config(config)
    model = cfg.name if PRESETS.get(cfg.name) == cfg else cfg.to_json()
    return tvm.target.Target({"kind": "llvm", "keys": [NPU_KEY, "cpu"], "model": model})


def is_npu_target(target: Optional[tvm.target.Target]) -> bool:
    return target is not None and NPU_KEY in [str(k) for k in target.keys]


def config_of(target: tvm.target.Target) -> NPUConfig:
    """The NPUConfig an NPU target was made for (from its `model` attribute)."""
    model = str(target.attrs.get("model", "")) if "model" in target.attrs else ""
    return get_config(model or None)


def _register_tags() -> None:
    tvm.target.tag.register_tag("npu", {"kind": "llvm", "keys": [NPU_KEY, "cpu"], "model": "npu-edge"},
                                override=True)
    for name in PRESETS:
        tvm.target.tag.register_tag(name, {"kind": "llvm", "keys": [NPU_KEY, "cpu"], "model": name}, override=True)


def _wrap_pipeline(name: str) -> None:
    original = relax.pipeline.PIPELINE_MAP[name]
    original = getattr(original, _HOOK_ATTR, original)  # re-import safe: never wrap twice

    def factory(**kwargs):
        base = original(**kwargs)

        @tvm.transform.module_pass(opt_level=0, name="tvm_npu.DispatchDefaultPipeline")
        def dispatch(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
            target = tvm.target.Target.current(allow_none=True)
            if is_npu_target(target):
                mod = partition_for_npu(mod, config_of(target))
            return base(mod)

        return dispatch

    setattr(factory, _HOOK_ATTR, original)
    relax.pipeline.PIPELINE_MAP[name] = factory


def _npu_pipeline(**kwargs):
    base = getattr(relax.pipeline.PIPELINE_MAP["default"], _HOOK_ATTR)(**kwargs)

    @tvm.transform.module_pass(opt_level=0, name="tvm_npu.NPUPipeline")
    def npu(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=True)
        if not is_npu_target(target):
            raise ValueError(f"relax_pipeline='npu' needs an NPU target (npu, npu-nano, npu-edge, npu-pro or "
                             f"tvm_npu.npu_target(config)), got {target}")
        return base(partition_for_npu(mod, config_of(target)))

    return npu


def register() -> None:
    """Registers the NPU tags and pipelines (idempotent; called by `import tvm_npu`)."""
    _register_tags()
    for name in ("default", "default_build"):
        _wrap_pipeline(name)
    relax.pipeline.PIPELINE_MAP["npu"] = _npu_pipeline
