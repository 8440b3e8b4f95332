"""Relay-era compatibility layer (tvm_npu/relay_ext/compat/): Relay-style scripts on TVM 0.27.

Every numeric check compares against an independent reference (onnxruntime for ONNX, the TFLite
interpreter for TFLite), never against the shim itself.

Tolerances:
- NPU targets: the NPU stores activations and weights in fp16 (11-bit significand, one rounding
  = 2^-11 = 4.9e-4 relative) and accumulates in fp32. The graphs here round ~5 times on the way
  (input, weights, conv output, pool output, gemm inputs), so |npu - ref| <= 5e-3 * max|ref|
  (about 10 fp16 ulps of the largest output) is used; the observed error is 1.5e-4 to 6e-4 * max|ref|.
- "llvm": float32 everywhere, only the summation order differs: rtol = atol = 1e-5.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import tvm_npu
from tvm_npu.relay_ext import compat as relay_compat
from tvm_npu.relay_ext.compat import unmapped

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(2024)
NPU_REL_TOL = 5e-3


# ------------------------------------------------------------------------------------------
# models and references
# ------------------------------------------------------------------------------------------

def _arr(shape, scale):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def conv_net(two_outputs: bool = False) -> onnx.ModelProto:
    """input.1 [1,8,16,16] -> Conv(8->16, 3x3, pad 1) + bias -> Relu -> MaxPool 2x2 -> Reshape [1,1024]
    -> Gemm(1024->10). Big enough that the NPU performance model offloads conv+relu+pool by
    itself. two_outputs: the Relu output is a second graph output, and the gemm weight has a
    PyTorch-style "onnx::" name."""
    fc_w = "onnx::Gemm_7" if two_outputs else "fc.weight"
    inits = [numpy_helper.from_array(_arr((16, 8, 3, 3), 0.2), "conv.weight"),
             numpy_helper.from_array(_arr((16,), 0.1), "conv.bias"),
             numpy_helper.from_array(np.array([1, 1024], np.int64), "flat_shape"),
             numpy_helper.from_array(_arr((10, 1024), 0.05), fc_w),
             numpy_helper.from_array(_arr((10,), 0.1), "fc.bias")]
    nodes = [helper.make_node("Conv", ["input.1", "conv.weight", "conv.bias"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["pool", "flat_shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", fc_w, "fc.bias"], ["logits"], transB=1)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])]
    if two_outputs:
        outputs.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, [1, 16, 16, 16]))
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                                           [1, 8, 16, 16])], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def ort_run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input.1": x})


def assert_npu_close(got, want):
    scale = max(float(np.max(np.abs(want))), 1e-3)
    err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert err <= NPU_REL_TOL * scale, f"max |npu - ref| = {err:.3g} > {NPU_REL_TOL} * {scale:.3g}"


def relay_script(model, x, target):
    """An unchanged Relay-era (TVM 0.8-0.16) deployment script."""
    from tvm import relay
    from tvm.contrib import graph_executor

    shape_dict = {"input.1": x.shape}
    mod, params = relay.frontend.from_onnx(model, shape_dict)
    with tvm.transform.PassContext(opt_level=3):
        lib = relay.build(mod, target=target, params=params)
    dev = tvm.cpu(0)
    module = graph_executor.GraphModule(lib["default"](dev))
    module.set_input("input.1", tvm.nd.array(x))
    module.run()
    out = module.get_output(0).numpy()
    return lib, module, out


# ------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def shim():
    assert relay_compat.install() is True
    yield relay_compat


@pytest.fixture(scope="module")
def model():
    return conv_net()


@pytest.fixture(scope="module")
def x():
    return RNG.standard_normal((1, 8, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def ref(model, x):
    return ort_run(model, x)[0]


@pytest.fixture(scope="module")
def npu_run(model, x):
    return relay_script(model, x, "npu")


@pytest.fixture(scope="module")
def llvm_run(model, x):
    return relay_script(model, x, "llvm")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, npu_run, llvm_run):
    d = tmp_path_factory.mktemp("relay_compat")
    paths = {"npu": str(d / "net_npu.so"), "llvm": str(d / "net_llvm.so")}
    npu_run[0].export_library(paths["npu"])
    llvm_run[0].export_library(paths["llvm"])
    return paths


# ------------------------------------------------------------------------------------------
# the Relay script end to end
# ------------------------------------------------------------------------------------------

def test_relay_script_npu_matches_onnxruntime(npu_run, ref):
    lib, module, out = npu_run
    assert_npu_close(out, ref)
    report = lib.npu_report
    assert report is tvm_npu.last_report()
    on_npu = {p.op for p in report.placements if p.target == "npu"}
    assert {"relax.nn.conv2d", "relax.nn.relu", "relax.nn.max_pool2d"} <= on_npu, report.summary()
    assert isinstance(module.get_output(0), tvm.runtime.Tensor)


def test_relay_script_llvm_matches_onnxruntime(llvm_run, ref):
    lib, module, out = llvm_run
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert lib.npu_report is None
    assert module.get_num_outputs() == 1 and module.get_num_inputs() == 1


def test_npu_and_llvm_all_on_npu(model, x, ref):
    """With the should-run decision overridden everything the NPU can run goes there, gemm included."""
    with tvm_npu.compile_options(should_run=False):
        lib, _, out = relay_script(model, x, "npu-pro")
    assert {"relax.nn.conv2d", "relax.matmul"} <= {p.op for p in lib.npu_report.placements if p.target == "npu"}
    assert lib.npu_report.config == "npu-pro"
    assert_npu_close(out, ref)


def test_export_load_in_fresh_process(exported, npu_run, llvm_run, x, tmp_path):
    """export_library -> a new interpreter with only `import tvm_npu` -> load_module -> same outputs."""
    np.save(tmp_path / "x.npy", x)
    code = "\n".join([
        "import sys, json, numpy as np",
        "import tvm, tvm_npu",
        "auto = 'tvm.relay' in sys.modules",
        "if not auto:  # until tvm_npu/__init__.py installs the shim itself",
        "    import tvm_npu.relay_ext.compat; tvm_npu.relay_ext.compat.install()",
        "from tvm.contrib import graph_executor",
        "x = np.load(sys.argv[1]); res = {'auto': auto}",
        "for name, path in (('npu', sys.argv[2]), ('llvm', sys.argv[3])):",
        "    lib = tvm.runtime.load_module(path)",
        "    def kinds(m): return [m.kind] + [k for i in m.imports for k in kinds(i)]",
        "    m = graph_executor.GraphModule(lib['default'](tvm.cpu(0)))",
        "    n_out, n_in = m.get_num_outputs(), m.get_num_inputs()",
        "    m.set_input('input.1', x); m.run()",
        "    np.save(sys.argv[4] + name + '.npy', m.get_output(0).numpy())",
        "    res[name] = {'kinds': kinds(lib), 'outputs': n_out, 'inputs': n_in}",
        "print(json.dumps(res))",
    ])
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy"), exported["npu"], exported["llvm"],
                           str(tmp_path / "out_")], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "npu" in res["npu"]["kinds"] and "npu" not in res["llvm"]["kinds"]
    assert res["npu"]["outputs"] == res["llvm"]["outputs"] == 1 and res["npu"]["inputs"] == 1
    # same compiled code, same inputs: bit-identical to the in-process run
    np.testing.assert_array_equal(np.load(tmp_path / "out_npu.npy"), npu_run[2])
    np.testing.assert_array_equal(np.load(tmp_path / "out_llvm.npy"), llvm_run[2])


def test_import_tvm_npu_alone_installs_shim():
    code = "import sys, tvm_npu; print('tvm.relay' in sys.modules); from tvm import relay; relay.build"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.stdout.strip().startswith("False"):
        pytest.skip("tvm_npu/__init__.py does not call install() yet")
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]


def test_loaded_library_in_process(exported, npu_run):
    lib = tvm.runtime.load_module(exported["npu"])
    m = tvm.contrib.graph_executor.GraphModule(lib["default"](tvm.cpu()))
    m.run(**{"input.1": npu_run[1].get_input("input.1")})
    np.testing.assert_array_equal(m.get_output(0).numpy(), npu_run[2])
    same = relay_compat.load_module(exported["npu"])
    assert same.kind == "relax.VMExecutable"


def test_module_getitem_unchanged_otherwise(exported):
    lib = tvm.runtime.load_module(exported["llvm"])
    assert callable(lib["stats"])  # an existing function of the executable
    with pytest.raises(AttributeError):
        lib["no_such_function"]
    library = lib.imports[0]  # the compiled kernels: not a VM executable
    assert library.kind != "relax.VMExecutable"
    with pytest.raises(AttributeError):
        library["default"]


# ------------------------------------------------------------------------------------------
# from_onnx / params
# ------------------------------------------------------------------------------------------

def test_params_are_initializers(model):
    from tvm import relay

    mod, params = relay.frontend.from_onnx(model, {"input.1": (1, 8, 16, 16)})
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert set(params) == set(inits)
    for name, value in inits.items():
        assert isinstance(params[name], tvm.runtime.Tensor)
        np.testing.assert_array_equal(params[name].numpy(), value)
    main = mod["main"]
    assert [v.name for v in main.params] == ["input.1"] + list(inits)  # detached: inputs, then weights
    assert "params" not in main.attrs and int(main.attrs["num_input"]) == 1


def test_two_outputs_and_onnx_prefixed_names(tmp_path):
    from tvm import relay
    from tvm.contrib import graph_executor

    model = conv_net(two_outputs=True)
    x = RNG.standard_normal((1, 8, 16, 16)).astype(np.float32)
    want = ort_run(model, x)
    mod, params = relay.frontend.from_onnx(model, {"input.1": x.shape})
    assert "onnx::Gemm_7" in params  # keyed by the initializer name, as in Relay
    with tvm_npu.compile_options(should_run=False), tvm.transform.PassContext(opt_level=3):
        lib = relay.build(mod, target="npu-nano", params=params)
    m = graph_executor.GraphModule(lib["default"](tvm.cpu()))
    assert m.get_num_outputs() == 2  # known before run
    m.set_input("input.1", x)
    m.run()
    for i in range(2):
        assert_npu_close(m.get_output(i).numpy(), want[i])
    lib.export_library(str(tmp_path / "two.so"))
    loaded = graph_executor.GraphModule(tvm.runtime.load_module(str(tmp_path / "two.so"))["default"](tvm.cpu()))
    assert loaded.get_num_outputs() == 2 and loaded.get_num_inputs() == 1


def test_build_without_params_keeps_weights_as_inputs(model, x, ref):
    """Relay semantics: weights not bound at build time are graph inputs, set with set_input(**params)."""
    from tvm import relay
    from tvm.contrib import graph_executor

    mod, params = relay.frontend.from_onnx(model, {"input.1": x.shape})
    lib = relay.build(mod, target="llvm")
    m = graph_executor.GraphModule(lib["default"](tvm.cpu()))
    assert m.get_num_inputs() == 1 + len(params)
    m.set_input(**params)
    m.set_input("input.1", x)
    m.run()
    np.testing.assert_allclose(m.get_output(0).numpy(), ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# GraphModule API
# ------------------------------------------------------------------------------------------

def test_graph_module_api(llvm_run, x, ref):
    lib, _, _ = llvm_run
    from tvm.contrib import graph_executor

    m = graph_executor.GraphModule(lib["default"](tvm.cpu()))
    with pytest.raises(RuntimeError, match="run"):
        m.get_output(0)
    assert m.get_input_index("input.1") == 0 and m.get_input_index("nope") == -1
    assert m.get_input_info() == ({"input.1": (1, 8, 16, 16)}, {"input.1": "float32"})
    np.testing.assert_array_equal(m.get_input("input.1").numpy(), np.zeros_like(x))  # Relay: zero buffer
    for setter in (lambda: m.set_input(0, x),  # by index, numpy
                   lambda: m.set_input("input.1", tvm.runtime.tensor(x)),  # tvm tensor
                   lambda: m.set_input(**{"input.1": x.astype(np.float64)}),  # kwargs, cast to the graph dtype
                   lambda: m.set_input(**{"input.1": x, "not_an_input": x})):  # unknown kwargs ignored (Relay)
        m.set_input("input.1", np.zeros_like(x))
        setter()
        m.run()
        np.testing.assert_allclose(m.get_output(0).numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(m.get_input(0).numpy(), x)
    out = tvm.runtime.empty((1, 10), "float32")
    assert m.get_output(0, out) is out
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
    m.run(**{"input.1": np.zeros_like(x)})  # run(**inputs)
    assert not np.allclose(m.get_output(0).numpy(), ref)
    with pytest.raises(RuntimeError, match="Could not find"):
        m.set_input("nope", x)
    with pytest.raises(ValueError, match="shape"):
        m.set_input("input.1", np.zeros((1, 8, 8, 8), np.float32))
    with pytest.raises(IndexError):
        m.get_output(1)
    # the Relay runtime-module form and load_params
    ex = lib["default"](tvm.cpu())
    ex["set_input"]("input.1", x)
    ex["run"]()
    np.testing.assert_allclose(ex["get_output"](0).numpy(), ref, rtol=1e-5, atol=1e-5)
    m.load_params(tvm.runtime.save_param_dict({"input.1": tvm.runtime.tensor(x)}))
    m.run()
    np.testing.assert_allclose(m.get_output(0).numpy(), ref, rtol=1e-5, atol=1e-5)
    assert m.benchmark(tvm.cpu(), repeat=1, number=1).mean > 0
    with pytest.raises(TypeError, match='lib\\["default"\\]'):
        graph_executor.GraphModule(lib)


def test_factory_api_and_create(llvm_run, x, ref):
    from tvm.contrib import graph_executor

    lib = llvm_run[0]
    assert lib.get_params() == {}  # bound into the executable
    assert lib.get_lib() is lib.executable and lib.module.kind == "relax.VMExecutable"
    graph = json.loads(lib.get_graph_json())
    assert graph["inputs"] == [{"name": "input.1", "shape": [1, 8, 16, 16], "dtype": "float32"}]
    m = graph_executor.create(lib.get_graph_json(), lib.get_lib(), tvm.cpu())
    m.set_input(**lib.get_params())
    m.run(**{"input.1": x})
    np.testing.assert_allclose(m.get_output(0).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_plain_tvm_compile_executable(model, x, ref, tmp_path):
    """An executable not built by relay.build (no metadata): names from the VM, outputs after run."""
    from tvm.contrib import graph_executor
    from tvm.relax.frontend.onnx import from_onnx

    ex = tvm.compile(from_onnx(model, keep_params_in_input=False, sanitize_input_names=False), target="llvm")
    ex.export_library(str(tmp_path / "plain.so"))
    for m in (graph_executor.create("", ex, tvm.cpu()),
              graph_executor.GraphModule(tvm.runtime.load_module(str(tmp_path / "plain.so"))["default"](tvm.cpu()))):
        assert m.get_num_inputs() == 1 and m.get_input_index("input.1") == 0
        with pytest.raises(RuntimeError, match="after run"):
            m.get_num_outputs()
        m.run(**{"input.1": x})
        assert m.get_num_outputs() == 1
        np.testing.assert_allclose(m.get_output(0).numpy(), ref, rtol=1e-5, atol=1e-5)


def test_targets_and_target_host(model, x, ref, tmp_path):
    from tvm import relay
    from tvm.contrib import graph_executor

    mod, params = relay.frontend.from_onnx(model, {"input.1": x.shape})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # target_host="llvm" is ignored silently
        with tvm.transform.PassContext(opt_level=3):
            npu = relay.build(mod, tvm.target.Target("npu-nano"), target_host="llvm", params=params)
            cpu = relay.build(mod, target=tvm.target.Target("llvm"), target_host=tvm.target.Target("llvm"),
                              params=params, mod_name="net")
    assert npu.npu_report is not None and npu.npu_report.config == "npu-nano"
    for lib, name in ((npu, "default"), (cpu, "net")):
        m = graph_executor.GraphModule(lib[name](tvm.cpu()))
        m.set_input("input.1", x)
        m.run()
        assert_npu_close(m.get_output(0).numpy(), ref)
    cpu.export_library(str(tmp_path / "net.so"))
    loaded = tvm.runtime.load_module(str(tmp_path / "net.so"))
    m = graph_executor.GraphModule(loaded["net"](tvm.cpu()))  # the custom mod_name is recorded
    m.run(**{"input.1": x})
    np.testing.assert_allclose(m.get_output(0).numpy(), ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# from_tflite
# ------------------------------------------------------------------------------------------

def tflite_net(w, b, g, c) -> bytes:
    """NHWC [1,8,8,3] -> CONV_2D(SAME, fused RELU) -> MAX_POOL_2D 2x2 -> RESHAPE [1,128] ->
    FULLY_CONNECTED(10), written with the flatbuffer builders of the `tflite` package."""
    import flatbuffers
    import tflite
    from tflite.ActivationFunctionType import ActivationFunctionType
    from tflite.BuiltinOperator import BuiltinOperator as Op
    from tflite.BuiltinOptions import BuiltinOptions as Opt
    from tflite.Padding import Padding
    from tflite.TensorType import TensorType

    bld = flatbuffers.Builder(4096)

    def vec(start, items):
        start(bld, len(items))
        for o in reversed(items):
            bld.PrependUOffsetTRelative(o)
        return bld.EndVector()

    buffers = []
    for data in (None, w, b, np.array([1, 128], np.int32), g, c):
        v = None if data is None else bld.CreateNumpyVector(np.frombuffer(data.tobytes(), np.uint8))
        tflite.BufferStart(bld)
        if v is not None:
            tflite.BufferAddData(bld, v)
        buffers.append(tflite.BufferEnd(bld))
    f32, i32 = TensorType.FLOAT32, TensorType.INT32
    specs = [("input", [1, 8, 8, 3], f32, 0), ("conv/w", list(w.shape), f32, 1), ("conv/b", [8], f32, 2),
             ("conv", [1, 8, 8, 8], f32, 0), ("pool", [1, 4, 4, 8], f32, 0), ("shape", [2], i32, 3),
             ("flat", [1, 128], f32, 0), ("fc/w", list(g.shape), f32, 4), ("fc/b", [10], f32, 5),
             ("output", [1, 10], f32, 0)]
    tensors = []
    for name, shape, ty, buf in specs:
        n, s = bld.CreateString(name), bld.CreateNumpyVector(np.array(shape, np.int32))
        tflite.TensorStart(bld)
        tflite.TensorAddShape(bld, s)
        tflite.TensorAddType(bld, ty)
        tflite.TensorAddBuffer(bld, buf)
        tflite.TensorAddName(bld, n)
        tensors.append(tflite.TensorEnd(bld))
    tflite.Conv2DOptionsStart(bld)
    tflite.Conv2DOptionsAddPadding(bld, Padding.SAME)
    tflite.Conv2DOptionsAddStrideW(bld, 1)
    tflite.Conv2DOptionsAddStrideH(bld, 1)
    tflite.Conv2DOptionsAddDilationWFactor(bld, 1)
    tflite.Conv2DOptionsAddDilationHFactor(bld, 1)
    tflite.Conv2DOptionsAddFusedActivationFunction(bld, ActivationFunctionType.RELU)
    conv_opts = tflite.Conv2DOptionsEnd(bld)
    tflite.Pool2DOptionsStart(bld)
    tflite.Pool2DOptionsAddPadding(bld, Padding.VALID)
    for f in (tflite.Pool2DOptionsAddStrideW, tflite.Pool2DOptionsAddStrideH, tflite.Pool2DOptionsAddFilterWidth,
              tflite.Pool2DOptionsAddFilterHeight):
        f(bld, 2)
    pool_opts = tflite.Pool2DOptionsEnd(bld)
    tflite.ReshapeOptionsStart(bld)
    reshape_opts = tflite.ReshapeOptionsEnd(bld)
    tflite.FullyConnectedOptionsStart(bld)
    fc_opts = tflite.FullyConnectedOptionsEnd(bld)
    ops = [(Op.CONV_2D, [0, 1, 2], [3], Opt.Conv2DOptions, conv_opts),
           (Op.MAX_POOL_2D, [3], [4], Opt.Pool2DOptions, pool_opts),
           (Op.RESHAPE, [4, 5], [6], Opt.ReshapeOptions, reshape_opts),
           (Op.FULLY_CONNECTED, [6, 7, 8], [9], Opt.FullyConnectedOptions, fc_opts)]
    codes, operators = [], []
    for code, *_ in ops:
        tflite.OperatorCodeStart(bld)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(bld, code)
        tflite.OperatorCodeAddBuiltinCode(bld, code)
        tflite.OperatorCodeAddVersion(bld, 1)
        codes.append(tflite.OperatorCodeEnd(bld))
    for i, (_, ins, outs, opt_type, opts) in enumerate(ops):
        iv, ov = bld.CreateNumpyVector(np.array(ins, np.int32)), bld.CreateNumpyVector(np.array(outs, np.int32))
        tflite.OperatorStart(bld)
        tflite.OperatorAddOpcodeIndex(bld, i)
        tflite.OperatorAddInputs(bld, iv)
        tflite.OperatorAddOutputs(bld, ov)
        tflite.OperatorAddBuiltinOptionsType(bld, opt_type)
        tflite.OperatorAddBuiltinOptions(bld, opts)
        operators.append(tflite.OperatorEnd(bld))
    tv, opv = vec(tflite.SubGraphStartTensorsVector, tensors), vec(tflite.SubGraphStartOperatorsVector, operators)
    iv, ov = bld.CreateNumpyVector(np.array([0], np.int32)), bld.CreateNumpyVector(np.array([9], np.int32))
    name = bld.CreateString("main")
    tflite.SubGraphStart(bld)
    tflite.SubGraphAddTensors(bld, tv)
    tflite.SubGraphAddInputs(bld, iv)
    tflite.SubGraphAddOutputs(bld, ov)
    tflite.SubGraphAddOperators(bld, opv)
    tflite.SubGraphAddName(bld, name)
    subgraph = tflite.SubGraphEnd(bld)
    sgv, cv = vec(tflite.ModelStartSubgraphsVector, [subgraph]), vec(tflite.ModelStartOperatorCodesVector, codes)
    bv = vec(tflite.ModelStartBuffersVector, buffers)
    tflite.ModelStart(bld)
    tflite.ModelAddVersion(bld, 3)
    tflite.ModelAddOperatorCodes(bld, cv)
    tflite.ModelAddSubgraphs(bld, sgv)
    tflite.ModelAddBuffers(bld, bv)
    bld.Finish(tflite.ModelEnd(bld), file_identifier=b"TFL3")
    return bytes(bld.Output())


def test_from_tflite_against_tflite_interpreter():
    tflite = pytest.importorskip("tflite")
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter")
    from tvm import relay
    from tvm.contrib import graph_executor

    w, b, g, c = _arr((8, 3, 3, 3), 0.3), _arr((8,), 0.1), _arr((10, 128), 0.1), _arr((10,), 0.1)
    buf = tflite_net(w, b, g, c)
    x = RNG.standard_normal((1, 8, 8, 3)).astype(np.float32)
    interp = interp_mod.Interpreter(model_content=buf)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    want = interp.get_tensor(interp.get_output_details()[0]["index"])

    mod, params = relay.frontend.from_tflite(tflite.Model.GetRootAsModel(buf, 0), shape_dict={"input": x.shape},
                                             dtype_dict={"input": "float32"})
    assert set(params) == {"conv/w", "conv/b", "fc/w", "fc/b"}  # named after the TFLite tensors
    np.testing.assert_array_equal(params["fc/w"].numpy(), g)
    np.testing.assert_array_equal(params["conv/w"].numpy(), w.transpose(1, 2, 3, 0))  # OHWI -> HWIO, as used
    assert [v.name for v in mod["main"].params][0] == "input" and int(mod["main"].attrs["num_input"]) == 1
    assert "params" not in mod["main"].attrs
    for target in ("npu", "llvm"):
        with tvm_npu.compile_options(should_run=False), tvm.transform.PassContext(opt_level=3):
            lib = relay.build(mod, target=target, params=params)
        m = graph_executor.GraphModule(lib["default"](tvm.cpu()))
        m.set_input("input", x)
        m.run()
        got = m.get_output(0).numpy()
        if target == "npu":
            assert any(p.op == "relax.nn.conv2d" and p.target == "npu" for p in lib.npu_report.placements)
            assert_npu_close(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the flatbuffer bytes are accepted as well
    mod2, params2 = relay.frontend.from_tflite(buf)
    assert set(params2) == set(params)


# ------------------------------------------------------------------------------------------
# what cannot map: NotImplementedError naming the Relax replacement
# ------------------------------------------------------------------------------------------

UNMAPPED = [
    ("relay.var('x', shape=(1, 3))", "relax.Var"),
    ("relay.const(1.0)", "relax.const"),
    ("relay.Function([], None)", "relax.Function"),
    ("relay.nn.conv2d", "tvm.relax.op.nn.conv2d"),
    ("relay.add", "tvm.relax.op.add"),
    ("relay.op.contrib.ethosn", "tvm.compile(mod, target='npu')"),
    ("relay.transform.InferType()", "Relax infers types"),
    ("relay.transform.FoldConstant()", "relax.transform.FoldConstant"),
    ("relay.transform.ConvertLayout({})", "relax.transform.ConvertLayout"),
    ("relay.transform.PartitionGraph()", "tvm_npu.partition_for_npu"),
    ("relay.transform.SomeOtherPass()", "tvm.relax.transform"),
    ("relay.quantize.quantize", "onnxruntime.quantization"),
    ("relay.quantize.qconfig", "onnxruntime.quantization"),
    ("relay.qnn.op.quantize", "from_tflite"),
    ("relay.testing.mobilenet", "from_onnx"),
    ("relay.analysis.free_vars", "tvm.relax.analysis"),
    ("relay.create_executor", "relax.VirtualMachine"),
    ("relay.vm.compile", "relax.VirtualMachine"),
    ("relay.frontend.from_keras", "from_tflite"),
    ("relay.frontend.from_mxnet", "from_onnx"),
    ("relay.backend.Executor('aot')", "relax.VirtualMachine"),
    ("relay.backend.Runtime('crt')", "C++ runtime"),
    ("autotvm.task.extract_from_program", "MetaSchedule"),
    ("autotvm.apply_history_best('log.json')", "MetaSchedule"),
    ("auto_scheduler.ApplyHistoryBest", "MetaSchedule"),
]


@pytest.mark.parametrize("expr,replacement", UNMAPPED, ids=[e for e, _ in UNMAPPED])
def test_unmapped_raise_not_implemented(expr, replacement):
    from tvm import auto_scheduler, autotvm, relay

    with pytest.raises(NotImplementedError) as info:
        eval(expr, {"relay": relay, "autotvm": autotvm, "auto_scheduler": auto_scheduler})
    msg = str(info.value)
    assert replacement in msg and "docs/RELAY_COMPAT.md" in msg, msg


def test_unmapped_from_import_and_build_options(model):
    from tvm import relay

    with pytest.raises(NotImplementedError, match="relax.Var"):
        from tvm.relay import var  # noqa: F401
    with pytest.raises(NotImplementedError, match="USMP|StaticPlanBlockMemory"):
        relay.build(relay.frontend.from_onnx(model)[0], "llvm", workspace_memory_pools=object())
    with pytest.raises(NotImplementedError, match="heterogeneous"):
        relay.build(relay.frontend.from_onnx(model)[0], {"cpu": "llvm", "cuda": "cuda"})
    # private names stay AttributeError, so tools probing modules keep working
    assert not hasattr(relay, "__file__") and not hasattr(relay.transform, "_private")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tvm.relay.no_such_module")


def test_docs_table_lists_every_unmapped_name():
    doc = open(os.path.join(REPO, "docs", "RELAY_COMPAT.md")).read()
    names = ([f"`relay.{n}`" for n in unmapped.RELAY_TOP]
             + [f"`relay.{n}.*`" for n in unmapped.RELAY_SUBMODULES]
             + [f"`relay.transform.{n}`" for n in unmapped.TRANSFORMS]
             + [f"`relay.frontend.{n}`" for n in unmapped.FRONTENDS])
    missing = [n for n in names if n not in doc]
    assert not missing, f"docs/RELAY_COMPAT.md does not list {missing}"


# ------------------------------------------------------------------------------------------
# install
# ------------------------------------------------------------------------------------------

IMPORT_FORMS = ["import tvm.relay", "from tvm import relay", "import tvm.relay.frontend",
                "from tvm.relay.frontend import from_onnx, from_tflite", "from tvm.relay import transform",
                "import tvm.relay.testing", "from tvm.contrib import graph_executor",
                "from tvm.contrib.graph_executor import GraphModule, create", "import tvm.contrib.graph_executor",
                "from tvm import nd", "from tvm import autotvm", "import tvm.auto_scheduler"]


@pytest.mark.parametrize("stmt", IMPORT_FORMS)
def test_import_forms(stmt):
    exec(stmt, {})


def test_install_idempotent():
    relay = sys.modules["tvm.relay"]
    getitem = tvm.runtime.Module.__getitem__
    for _ in range(3):
        assert relay_compat.install() is True
    assert sys.modules["tvm.relay"] is relay and tvm.relay is relay
    assert tvm.runtime.Module.__getitem__ is getitem
    assert not getattr(getitem.__wrapped__, unmapped.MARK, False)  # wrapped exactly once
    assert tvm.contrib.graph_executor is sys.modules["tvm.contrib.graph_executor"]
    assert tvm.relay.build is relay_compat.build and tvm.relay.frontend.from_onnx is relay_compat.from_onnx
    assert tvm.contrib.graph_executor.GraphModule is relay_compat.GraphModule
    assert relay_compat.is_installed()


def test_no_install_over_tvm_own_relay():
    """When TVM provides tvm.relay itself, install() leaves it alone."""
    relay_compat.uninstall()
    try:
        assert "tvm.relay" not in sys.modules and not hasattr(tvm, "relay")
        with pytest.raises(ImportError):
            importlib.import_module("tvm.relay")
        own = types.ModuleType("tvm.relay")
        sys.modules["tvm.relay"] = own
        assert relay_compat.install() is False
        assert sys.modules["tvm.relay"] is own
        ge = sys.modules["tvm.contrib.graph_executor"]  # still missing from TVM: installed
        assert relay_compat.install() is False and sys.modules["tvm.contrib.graph_executor"] is ge  # idempotent
        relay_compat.uninstall()
        assert sys.modules["tvm.relay"] is own  # never touched
    finally:
        if sys.modules.get("tvm.relay") is not None and not getattr(sys.modules["tvm.relay"], unmapped.MARK,
                                                                    False):
            del sys.modules["tvm.relay"]
        relay_compat.install()
    assert relay_compat.is_installed()


def test_tvm_nd(x):
    arr = tvm.nd.array(x)
    assert isinstance(arr, tvm.runtime.Tensor) and isinstance(arr, tvm.nd.NDArray)
    np.testing.assert_array_equal(arr.numpy(), x)
    assert tuple(tvm.nd.empty((2, 3), "float32").shape) == (2, 3)
