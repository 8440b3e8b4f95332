"""Provenance from the user's model: every Relax call TVM's frontends make from an ONNX node or a
TFLite operator carries a span naming it (the ONNX node's name, or the TFLite operator's type and
index), so reports, profiles and artifacts can name what the user knows instead of `lv12`.

TVM 0.27's ONNX, TFLite and torch.export frontends set no spans. `install()` (called by `import tvm_npu`) wraps
the one place each frontend converts an operator: the ONNX importer's `_convert_operator` (which
receives the node's name in `attrs["tvm_custom"]["name"]`) and the TFLite converter's table of
operator converters. Calls the conversion returns get a span with the name (spans are ignored by
structural equality and by every pass); bindings it emits itself (`BlockBuilder.emit` without a
name, only while a conversion runs) are named after the operator. The imported module is unchanged
otherwise. `source_name(expr)` reads a span back.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Optional

import tvm
from tvm import relax

_INSTALLED = "_tvm_npu_provenance"
_CONVERTING: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("tvm_npu_converting", default=None)


@contextlib.contextmanager
def converting(name: str):
    """While a frontend converts the operator `name`, bindings it emits without a name take `name`."""
    token = _CONVERTING.set(name)
    try:
        yield
    finally:
        _CONVERTING.reset(token)


def _install_builder() -> None:
    """While a conversion runs: `normalize` spans the calls it is given (normalising binds nested calls
    to new variables and rebuilds the outer call, so the outer call is spanned again afterwards), and
    `emit` names the bindings it makes."""
    cls = relax.BlockBuilder
    if getattr(cls.emit, _INSTALLED, False):
        return
    emit0, normalize0 = cls.emit, cls.normalize

    @functools.wraps(emit0)
    def emit(self, expr, name_hint: str = ""):
        return emit0(self, expr, name_hint or _CONVERTING.get() or "")

    @functools.wraps(normalize0)
    def normalize(self, expr):
        name = _CONVERTING.get()
        if name is None or not isinstance(expr, relax.Expr):
            return normalize0(self, expr)
        out = normalize0(self, tag(expr, name))
        if isinstance(out, relax.Call) and source_name(out) is None:
            out = normalize0(self, tag(out, name))
        return out

    setattr(emit, _INSTALLED, True)
    cls.emit, cls.normalize = emit, normalize


def _span(name: str) -> tvm.ir.Span:
    return tvm.ir.Span(tvm.ir.SourceName(name), 0, 0, 0, 0)


def source_name(expr) -> Optional[str]:
    """The model operator a Relax expression was converted from, if a frontend recorded it."""
    span = getattr(expr, "span", None)
    if span is None:
        return None
    name = str(span.source_name.name)
    return name or None


def tag(expr, name: str):
    """`expr` with every call in it that has no operator name yet spanned by `name` (calls of earlier
    operators are spanned already, or bound to variables, where the walk stops)."""

    def visit(e):
        if isinstance(e, relax.Call) and source_name(e) is None:
            args = [visit(a) for a in e.args]
            return relax.Call(e.op, args, e.attrs, e.ty_args, _span(name))
        if isinstance(e, relax.Tuple):
            return relax.Tuple([visit(f) for f in e.fields])
        return e

    return visit(expr)


def _onnx_name(attrs, op_type: str) -> str:
    custom = attrs.get("tvm_custom") if isinstance(attrs, dict) else None
    name = custom.get("name") if isinstance(custom, dict) else None
    return str(name) if name else op_type


def _install_onnx() -> None:
    from tvm.relax.frontend.onnx import onnx_frontend as F

    cls = F.ONNXGraphImporter
    if getattr(cls._convert_operator, _INSTALLED, False):
        return
    original = cls._convert_operator

    @functools.wraps(original)
    def convert(self, op_name, inputs, attrs, opset):
        with converting(_onnx_name(attrs, op_name)):
            return original(self, op_name, inputs, attrs, opset)

    setattr(convert, _INSTALLED, True)
    cls._convert_operator = convert


def _install_tflite() -> None:
    from tvm.relax.frontend.tflite import tflite_frontend as F

    cls = F.OperatorConverter
    if getattr(cls.__init__, _INSTALLED, False):
        return
    original = cls.__init__

    @functools.wraps(original)
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        index = {self.subgraph.Operators(i)._tab.Pos: i for i in range(self.subgraph.OperatorsLength())}

        def wrap(code: str, fn):
            @functools.wraps(fn)
            def convert(*a, **kw):  # passed through as the frontend calls it (some converters are partials
                #                        binding an argument before `op`, and are called with op=...)
                op = kw["op"] if "op" in kw else a[0]
                i = index.get(op._tab.Pos)
                name = f"{code}#{i}" if i is not None else code
                with converting(name):
                    ret = fn(*a, **kw)
                    return self.bb.normalize(ret) if isinstance(ret, relax.Expr) else ret
            return convert

        self.convert_map = {code: wrap(code, fn) for code, fn in self.convert_map.items()}

    setattr(init, _INSTALLED, True)
    cls.__init__ = init


def _torch_name(node) -> str:
    """A torch.export node's place in the user's model: the module path it ran in (`layer1.0.conv1`)
    and the node, else the node's name."""
    stack = (getattr(node, "meta", None) or {}).get("nn_module_stack") or {}
    path = ""
    if stack:
        entry = list(stack.values())[-1]
        path = str(entry[0] if isinstance(entry, (tuple, list)) else entry)
        path = path.replace("L['self'].", "").replace("L['self']", "")
    name = str(getattr(node, "name", "") or "")
    return f"{path}:{name}" if path and name else (path or name or "torch")


def install_torch() -> None:
    """Wraps the torch.export frontend's converter table (idempotent). Not done by `import tvm_npu`
    (importing the frontend imports torch, seconds): the loader calls it before converting a program,
    and `install()` does when the frontend is already imported."""
    from tvm.relax.frontend.torch import exported_program_translator as F

    cls = F.ExportedProgramImporter
    if getattr(cls.create_convert_map, _INSTALLED, False):
        return
    original = cls.create_convert_map

    @functools.wraps(original)
    def create(self, *args, **kwargs):
        table = original(self, *args, **kwargs)

        def wrap(fn):
            @functools.wraps(fn)
            def convert(*a, **kw):
                node = a[0] if a else kw.get("node")
                with converting(_torch_name(node)):
                    ret = fn(*a, **kw)
                    bb = getattr(self, "block_builder", None)
                    return bb.normalize(ret) if bb is not None and isinstance(ret, relax.Expr) else ret
            return convert

        return {k: wrap(fn) if callable(fn) else fn for k, fn in table.items()}

    setattr(create, _INSTALLED, True)
    cls.create_convert_map = create


def install() -> None:
    """Wraps the ONNX and TFLite frontends once per process (idempotent), and the torch.export one when
    it is already imported."""
    import sys

    _install_builder()
    _install_onnx()
    _install_tflite()
    if "tvm.relax.frontend.torch.exported_program_translator" in sys.modules:
        install_torch()
