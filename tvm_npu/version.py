"""The tvm_npu version, recorded in every artifact the compiler writes."""

__version__ = "0.1.0"
