"""Our additions to TVM's model frontends (registered from outside TVM, no fork).

`onnx_ops` holds ONNX operator converters, in the style of TVM's Relax ONNX frontend, for operators
and attribute values TVM 0.27 lacks or gets wrong; `onnx_ops.install()` (called by
`import tvm_npu`) makes the frontend use them. `tflite_ops` converts TFLite custom operators
(MediaPipe's Convolution2DTransposeBias), installed when this package is imported.
"""

from . import onnx_ops, tflite_ops

# TFLite custom operators (tflite_ops.py): installed here, before tvm_npu.provenance wraps the TFLite
# frontend's converter table, so that our converters record their model operator like TVM's
tflite_ops.install()

__all__ = ["onnx_ops", "tflite_ops"]
