"""What a QDQ model is made from: quantize_static settings and, per zoo model, a recipe (base model, calibration).

The registry (model_zoo.registry) registers one recipe per int8 zoo model; `get_spec(name)` finds it
by the base model's name, with or without "-int8".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Tuple

from ..data import Sample
from ..fetch import WheelFile


@dataclasses.dataclass(frozen=True)
class QdqSettings:
    """The quantize_static arguments (the defaults are what the zoo uses)."""

    per_channel: bool = True
    calibrate_method: str = "MinMax"  # "MinMax" | "Percentile" (histograms: memory-hungry on big maps)
    percentile: float = 99.999  # Percentile only
    calib_stride: int = 0  # >0: calibrate that many images at a time (CalibStridedMinMax; bounds the memory of
    # the histogram methods, which keep every intermediate tensor of a batch)
    activation_type: str = "QInt8"
    weight_type: str = "QInt8"
    activation_symmetric: bool = False  # asymmetric activations: zp != 0 (Relu/Clip get folded into zp = -128)
    weight_symmetric: bool = True  # weight zero points 0
    reduce_range: bool = False
    pre_process: bool = True  # onnxruntime.quantization.shape_inference.quant_pre_process
    slim: bool = False  # fold shape computations with onnxslim first (models whose Reshapes take computed
    # shapes: onnxruntime's symbolic shape inference asserts on their Concat of shapes)
    min_opset: int = 13  # per-channel DequantizeLinear needs `axis` (opset >= 13)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def quantize_kwargs(self) -> Dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

        extra = {"ActivationSymmetric": self.activation_symmetric, "WeightSymmetric": self.weight_symmetric}
        if self.calibrate_method == "Percentile":
            extra["CalibPercentile"] = self.percentile
        if self.calib_stride:
            extra["CalibStridedMinMax"] = self.calib_stride
        return dict(quant_format=QuantFormat.QDQ, per_channel=self.per_channel, reduce_range=self.reduce_range,
                    activation_type=getattr(QuantType, self.activation_type),
                    weight_type=getattr(QuantType, self.weight_type),
                    calibrate_method=getattr(CalibrationMethod, self.calibrate_method), extra_options=extra)

    def kwargs_text(self) -> Dict[str, str]:
        """quantize_kwargs() as text (for the JSON description of a QDQ model)."""
        return {k: (repr(v) if not hasattr(v, "name") else f"{type(v).__name__}.{v.name}")
                for k, v in self.quantize_kwargs().items()}


@dataclasses.dataclass(frozen=True)
class QdqSpec:
    """One QDQ model: the zoo model it quantises (its pinned float file and fixed input), and the
    calibration images it is quantised on."""

    base: str  # zoo model name (model_zoo.registry)
    source: WheelFile  # the float model's file
    input_name: str
    input_shape: Tuple[int, ...]  # the input is fixed to it before quantisation
    calibration: Callable[[bool], List[Sample]]  # progress -> samples (model inputs)
    settings: QdqSettings = QdqSettings()

    @property
    def name(self) -> str:
        return f"{self.base}-int8"


QDQ_MODELS: Dict[str, QdqSpec] = {}  # by base model name


def register(spec: QdqSpec) -> QdqSpec:
    if spec.base in QDQ_MODELS:
        raise ValueError(f"QDQ recipe for {spec.base} is registered twice")
    QDQ_MODELS[spec.base] = spec
    return spec


def get_spec(name: str) -> QdqSpec:
    base = name[:-5] if name.endswith("-int8") else name
    try:
        return QDQ_MODELS[base]
    except KeyError:
        raise KeyError(f"no QDQ recipe for {name!r}; known: {', '.join(QDQ_MODELS)}") from None


def calibration_samples(name: str, progress: bool = True) -> List[Sample]:
    return get_spec(name).calibration(progress)
