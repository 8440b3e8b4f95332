"""Test utilities shipped with tvm_npu (no test framework dependency).

``tvm_npu.testing.tflite_int8`` writes small int8 .tflite models without TensorFlow and runs them on
LiteRT's reference kernels, the bit-exact oracle for the NPU's integer datapath.
"""
