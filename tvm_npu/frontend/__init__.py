"""Our additions to TVM's model frontends (registered from outside TVM, no fork).

`onnx_ops` holds ONNX operator converters, in the style of TVM's Relax ONNX frontend, for operators
and attribute values TVM 0.27 lacks or gets wrong; `onnx_ops.install()` (called by
`import tvm_npu`) makes the frontend use them.
"""

from . import onnx_ops

__all__ = ["onnx_ops"]
