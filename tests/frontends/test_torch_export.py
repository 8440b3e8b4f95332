"""PyTorch models on the NPU: torch.export -> tvm.relax.frontend.torch.from_exported_program ->
tvm.compile(target="npu"), against eager PyTorch; .pt2 files through tvm_npu's loader and the command
line; relay.frontend.from_pytorch through the Relay compatibility layer.

Tolerance. The NPU keeps activations and weights in fp16 and accumulates in fp32; every NPU operator
rounds its output to fp16 once, a relative error of at most 2^-11 = 4.9e-4 of its magnitude. A model
chains such operators; their rounding errors are independent and add up like a random walk. The
bound is the one tests/relay_ext/onnx_graphs.fp16_close uses per operator (docs/COMPILER.md:
`4.9e-4 * (6 + 2 sqrt(depth)) * max|ref|`) with `depth` the number of MAC operators (convolutions and
matmuls) of the model. Every model is also checked to differ from eager PyTorch by more than fp32
noise (1e-5 * max|ref|): outputs computed on the CPU in fp32 could not pass that, so a test cannot
pass with the model silently on the CPU, besides the placement checks on the report.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tvm
from torch_models import (
    MobileNetV3Small,
    ResNet18,
    randomize_batch_norms,
    transformer_encoder,
)
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

import tvm_npu
from tvm_npu import importer
from tvm_npu.cli import main

# torch 2.13's own ExportedProgram.run_decompositions deep-copies a spec type it deprecated itself
pytestmark = pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\):FutureWarning")

FP16_ULP = 4.9e-4  # 2^-11


def assert_fp16_network_close(got: np.ndarray, want: np.ndarray, mac_ops: int) -> float:
    """`got` (the NPU's output) against eager PyTorch's `want`; returns the relative error."""
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(np.max(np.abs(want))), 1e-6)
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    tol = scale * FP16_ULP * (6 + 2 * np.sqrt(mac_ops))
    assert err <= tol, f"max |npu - torch| = {err:.3g} > tolerance {tol:.3g} (max |torch| {scale:.3g})"
    assert err > 1e-5 * scale, f"max |npu - torch| = {err:.3g}: fp32 agreement, the NPU's fp16 did not run"
    return err / scale


def _eager(model, *args) -> np.ndarray:
    with torch.no_grad():
        return model(*args).numpy()


def _compile_run(model, x: torch.Tensor):
    """(NPU output, report, imported module) of model(x) through torch.export and tvm.compile."""
    program = torch.export.export(model, (x,))
    mod = from_exported_program(program, keep_params_as_input=False, unwrap_unit_return_tuple=True)
    ex = tvm.compile(mod, target="npu")
    report = tvm_npu.last_report()
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x.numpy()))
    return out.numpy(), report, mod


def _placements(report, op: str):
    return [p for p in report.placements if p.op == op]


def _mac_ops(report) -> int:
    return len(_placements(report, "relax.nn.conv2d")) + len(_placements(report, "relax.matmul"))


def _cpu(report):
    return {(p.op, reason) for p in report.placements if p.target == "cpu" for reason in p.reasons}


# ---- torch.export -> from_exported_program -> tvm.compile(target="npu") ---------------------------

def test_resnet18_runs_on_the_npu_like_eager_pytorch():
    torch.manual_seed(0)
    model = randomize_batch_norms(ResNet18(), torch.Generator().manual_seed(1)).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    got, report, _ = _compile_run(model, x)
    convs = _placements(report, "relax.nn.conv2d")
    assert len(convs) == 20 and all(p.target == "npu" for p in convs)  # 17 3x3/7x7 + 3 downsampling 1x1
    for op in ("relax.nn.relu", "relax.add", "relax.nn.max_pool2d", "relax.mean", "relax.matmul"):
        assert _placements(report, op) and all(p.target == "npu" for p in _placements(report, op)), op
    assert not _placements(report, "relax.nn.batch_norm")  # folded into the convolutions
    # every operator runs on the NPU, torch.flatten before the classifier included (a layout operator)
    assert _cpu(report) == set(), report.summary()
    assert_fp16_network_close(got, _eager(model, x), _mac_ops(report))


def test_mobilenet_v3_small_runs_on_the_npu_like_eager_pytorch():
    torch.manual_seed(0)
    model = randomize_batch_norms(MobileNetV3Small(), torch.Generator().manual_seed(1)).eval()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    got, report, _ = _compile_run(model, x)
    convs = _placements(report, "relax.nn.conv2d")
    # stem + 11 blocks (10 expansions, 11 depthwise, 9 SE x 2 fc, 11 projections) + last conv = 52
    assert len(convs) == 52 and all(p.target == "npu" for p in convs)
    # hardswish / hardsigmoid (decomposed by torch.export into add, clip, multiply, divide) and the SE pools
    for op in ("relax.clip", "relax.multiply", "relax.divide", "relax.mean", "relax.nn.relu", "relax.matmul"):
        assert _placements(report, op) and all(p.target == "npu" for p in _placements(report, op)), op
    assert _cpu(report) == set(), report.summary()
    assert_fp16_network_close(got, _eager(model, x), _mac_ops(report))


def _weight_matmuls(mod):
    """Bindings of main's matmuls whose right operand is a weight (a constant, possibly transposed):
    the linear projections of a transformer (not the attention's activation x activation matmuls)."""
    defs = {b.var.name: b.value for block in mod["main"].body.blocks for b in block.bindings}

    def weight(e):
        while isinstance(e, relax.Var) and e.name in defs:
            e = defs[e.name]
            if isinstance(e, relax.Call) and e.op.name == "relax.permute_dims":
                e = e.args[0]
        return isinstance(e, tvm.ir.expr.Constant)

    return [name for name, v in defs.items() if isinstance(v, relax.Call) and v.op.name == "relax.matmul"
            and weight(v.args[1])]


def test_transformer_encoder_runs_its_projections_on_the_npu_like_eager_pytorch():
    torch.manual_seed(0)
    model = transformer_encoder(d_model=64, heads=4, layers=2).eval()
    x = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(2))
    got, report, mod = _compile_run(model, x)
    projections = _weight_matmuls(mod)
    assert len(projections) == 2 * 4  # per layer: in_proj (q, k, v), out_proj, linear1, linear2
    where = {p.binding: (p.target, p.composite) for p in report.placements}
    assert all(where[b] == ("npu", "npu.matmul_bias") for b in projections), {b: where[b] for b in projections}
    # the NPU can run the softmaxes; the performance model may keep a region on the CPU (it says so)
    assert all(p.target == "npu" or any("performance model" in r for r in p.reasons)
               for p in _placements(report, "relax.nn.softmax")), report.summary()
    assert_fp16_network_close(got, _eager(model, x), _mac_ops(report))


# ---- .pt2 files (torch.export.save): tvm_npu.importer.load and the command line -------------------

class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _small():
    torch.manual_seed(0)
    return randomize_batch_norms(_Small(), torch.Generator().manual_seed(1)).eval()


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3))


def _save(model, path, x, dynamic_shapes=None):
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes), str(path))
    return str(path)


def _run(mod, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, target="npu"), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_pt2_file_loads_compiles_and_runs_like_eager(tmp_path, capsys):
    model, x = _small(), _x(1, 3, 16, 16)
    path = _save(model, tmp_path / "small.pt2", x)
    loaded = importer.load(path)
    assert loaded.format == "pt2" and isinstance(loaded.model, torch.export.ExportedProgram)
    assert loaded.inputs == [("x", (1, 3, 16, 16), "float32")]
    assert [(t.shape, t.dtype) for t in loaded.outputs] == [((1, 10), "float32")]
    assert_fp16_network_close(_run(loaded.mod, x.numpy()), _eager(model, x), 2)
    assert all(p.target == "npu" for p in _placements(tvm_npu.last_report(), "relax.nn.conv2d"))
    # the bytes of the file and the ExportedProgram itself go through the same loader
    assert importer.load(Path(path).read_bytes()).format == "pt2"
    assert importer.load(loaded.model).inputs == loaded.inputs

    # the command line: explain names the placements; compile writes a library that runs like eager
    assert main(["explain", path, "--json"]) == 0
    assert "relax.nn.conv2d" in capsys.readouterr().out
    lib = tmp_path / "small.so"
    assert main(["compile", path, "-o", str(lib)]) == 0
    capsys.readouterr()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    assert_fp16_network_close(got, _eager(model, x), 2)
    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["run", path, "--input", str(tmp_path / "x.npy"), "--verbose"]) == 0  # (per-layer profile rows)
    assert "npu.conv2d" in capsys.readouterr().out


def test_pt2_dynamic_dims_need_a_shape_within_the_exported_range(tmp_path, capsys):
    model = _small()
    batch = torch.export.Dim("batch", max=8)
    path = _save(model, tmp_path / "dyn.pt2", _x(2, 3, 16, 16), {"x": {0: batch}})
    with pytest.raises(importer.ModelLoadError, match=r"dynamic dims \[None, 3, 16, 16\].*--shape x=N,3,16,16"):
        importer.load(path)
    assert main(["explain", path]) == 2
    _one_error_line(capsys, path, "--shape x=N,3,16,16")
    with pytest.raises(importer.ModelLoadError, match=r"range \[0, 8\]"):
        importer.load(path, {"x": (9, 3, 16, 16)})
    with pytest.raises(importer.ModelLoadError, match="static dim 16 at axis 2"):
        importer.load(path, {"x": (2, 3, 32, 16)})
    with pytest.raises(importer.ModelLoadError, match="no input 'y'"):
        importer.load(path, {"y": (2, 3, 16, 16)})
    with pytest.raises(importer.ModelLoadError, match="is float32 in the exported program"):
        importer.load(path, {"x": (2, 3, 16, 16)}, dtypes={"x": "float16"})
    loaded = importer.load(path, {"x": (3, 3, 16, 16)})  # a batch the example input did not have
    assert loaded.inputs == [("x", (3, 3, 16, 16), "float32")] and loaded.outputs[0].shape == (3, 10)
    x = _x(3, 3, 16, 16)
    assert_fp16_network_close(_run(loaded.mod, x.numpy()), _eager(model, x), 2)
    assert main(["explain", path, "--shape", "x=3,3,16,16"]) == 0


def _one_error_line(capsys, path, reason):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and reason in err, err


def _checkpoint_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def test_a_bad_pt2_file_is_one_error_naming_it(tmp_path, capsys):
    good = Path(_save(_small(), tmp_path / "good.pt2", _x(1, 3, 16, 16))).read_bytes()
    damaged = bytearray(good)
    at = good.find(b'"graph_module"')  # inside the serialised program (models/model.json)
    damaged[at + 5:at + 40] = b"x" * 35
    cases = [
        ("truncated.pt2", good[: len(good) // 2], "not a zip archive or a truncated one"),
        ("notes.pt2", b"these are notes, not a model\n" * 20, "not a zip archive"),
        ("empty.pt2", b"", "not a zip archive"),
        ("weights.pt2", _checkpoint_bytes(_small()), "torch.save checkpoint"),
        ("damaged.pt2", bytes(damaged), "a damaged or incompatible torch.export archive"),
    ]
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "not a program")
    cases.append(("other.pt2", other_zip.getvalue(), "a zip archive without an archive_format record"))
    for name, content, reason in cases:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(importer.ModelLoadError) as info:
            importer.load(path)
        msg = str(info.value)
        assert isinstance(info.value, ValueError) and "\n" not in msg, msg
        assert str(path) in msg and reason in msg, msg
        assert main(["explain", str(path)]) == 3  # a bad model file (tvm_npu.errors.ModelFileError)
        _one_error_line(capsys, path, reason)


def test_an_operator_the_frontend_cannot_convert_is_one_cli_error(tmp_path, capsys):
    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.bessel_j0(x)

    path = _save(Bessel(), tmp_path / "bessel.pt2", _x(4, 4))
    assert main(["explain", path]) == 4  # an unsupported operator (tvm_npu.errors.UnsupportedOperatorError)
    _one_error_line(capsys, path, "cannot convert these operators: ['special_bessel_j0.default']")


def test_without_torch_a_pt2_file_says_how_to_install_it(tmp_path, monkeypatch):
    path = _save(_small(), tmp_path / "small.pt2", _x(1, 3, 16, 16))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(importer.ModelLoadError) as info:
        importer.load(path)
    assert str(path) in str(info.value) and "pip install 'tvm_npu[torch]'" in str(info.value)


def test_a_torch_module_is_not_a_model_file():
    with pytest.raises(ValueError, match="export it first, torch.export.export"):
        importer.load(_small())


# ---- relay.frontend.from_pytorch (the Relay compatibility layer) ----------------------------------

JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@JIT_DEPRECATED
@pytest.mark.parametrize("kind", ["module", "trace", "script"])
def test_relay_from_pytorch_builds_for_the_npu_like_eager(kind):
    from tvm import relay
    from tvm.contrib import graph_executor

    model, x = _small(), _x(1, 3, 16, 16)
    source = {"module": lambda: model, "trace": lambda: torch.jit.trace(model, x),
              "script": lambda: torch.jit.script(model)}[kind]()
    mod, params = relay.frontend.from_pytorch(source, [("input0", (1, 3, 16, 16))])
    # main takes the input under its Relay name, then the weights under their state-dict names
    assert mod["main"].params[0].name == "input0"
    assert sorted(params) == ["bn.bias", "bn.weight", "conv.weight", "fc.bias", "fc.weight"]
    for name, value in params.items():
        np.testing.assert_array_equal(value.numpy(), model.state_dict()[name].numpy())
    with tvm.transform.PassContext(opt_level=3):
        lib = relay.build(mod, target="npu", params=params)
    assert all(p.target == "npu" for p in _placements(lib.npu_report, "relax.nn.conv2d"))
    m = graph_executor.GraphModule(lib["default"](tvm.cpu()))
    m.set_input("input0", x.numpy())
    m.run()
    assert_fp16_network_close(m.get_output(0).numpy(), _eager(model, x), 2)


def test_relay_from_pytorch_input_infos_and_options():
    from tvm import relay

    model = _small()
    mod, params = relay.frontend.from_pytorch(model, [("data", ((2, 3, 16, 16), "float32"))],
                                              use_parser_friendly_name=True)
    assert mod["main"].params[0].name == "data" and "conv_weight" in params
    assert [int(d) for d in mod["main"].params[0].ty.shape.values] == [2, 3, 16, 16]
    with pytest.raises(ValueError, match="static shape"):
        relay.frontend.from_pytorch(model, [("data", (None, 3, 16, 16))])
    with pytest.raises(importer.ModelLoadError, match="forward takes 1 tensor input"):
        relay.frontend.from_pytorch(model, [("a", (1, 3, 16, 16)), ("b", (1, 3, 16, 16))])
    with pytest.raises(NotImplementedError, match="custom_convert_map"):
        relay.frontend.from_pytorch(model, [("data", (1, 3, 16, 16))], custom_convert_map={"aten::relu": None})
    with pytest.warns(UserWarning, match="training mode"):
        relay.frontend.from_pytorch(_Small(), [("data", (1, 3, 16, 16))])


@JIT_DEPRECATED
def test_relay_from_pytorch_names_a_script_module_it_cannot_export():
    from tvm import relay

    class DataLoop(torch.nn.Module):
        def forward(self, x):
            while bool(x.sum() > 0):
                x = x - 1.0
            return x

    with pytest.raises(importer.ModelLoadError) as info:
        relay.frontend.from_pytorch(torch.jit.script(DataLoop()), [("x", (4,))])
    msg = str(info.value)
    assert "DataLoop" in msg and "TS2EPConverter" in msg and "prim::Loop" in msg, msg
    assert "pass the original torch.nn.Module" in msg and "\n" not in msg
