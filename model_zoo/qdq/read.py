"""Reading a QDQ model back: its JSON description and the quantisation parameters of its outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np


def qdq_info(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The JSON file written beside a QDQ model (settings, versions, hashes, calibration inputs)."""
    return json.loads(Path(str(path) + ".json").read_text())


def output_quant_params(model_or_path) -> Dict[str, Tuple[float, int]]:
    """{graph output: (scale, zero point)} of the DequantizeLinear that produces each output (the
    last Q/DQ pair). Outputs produced by anything else are left out."""
    import onnx
    from onnx import numpy_helper

    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    prod = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for o in model.graph.output:
        n = prod.get(o.name)
        if n is None or n.op_type != "DequantizeLinear":
            continue
        scale = inits[n.input[1]]
        zp = inits[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros((), np.int8)
        if scale.size != 1:
            raise ValueError(f"output {o.name} is dequantised per channel")
        out[o.name] = (float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]))
    return out
