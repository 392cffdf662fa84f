"""What real exported ONNX files do that models built here do not: old opsets (11, 12), dynamic
dims written as -1 (Paddle2ONNX), stale declared output shapes, open (+-Inf) Clip bounds, static
batch sizes smaller than the calibration file. Each is a small model in the exporters' style,
checked against onnxruntime on the original file."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.pipeline import compile_model
from sbcompile.runtime.reference import run

RNG = np.random.default_rng(14)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _paddle_style(opset: int, batch=-1) -> onnx.ModelProto:
    """Conv -> Clip(0, 6) (bounds as inputs, opset 11 style) -> GlobalAveragePool -> Reshape ->
    MatMul -> Softmax, input dims written as -1 like Paddle2ONNX does."""
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    fc = RNG.standard_normal((8, 4)).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Clip", ["c", "lo", "hi"], ["r"]),
             h.make_node("GlobalAveragePool", ["r"], ["p"]),
             h.make_node("Reshape", ["p", "shape"], ["f"]),
             h.make_node("MatMul", ["f", "fc"], ["z"]),
             h.make_node("Softmax", ["z"], ["y"], axis=1)]
    x = h.make_tensor_value_info("x", T.FLOAT, [batch, 3, 12, 12])
    y = h.make_tensor_value_info("y", T.FLOAT, [batch, 4])
    graph = h.make_graph(nodes, "paddle_style", [x], [y],
                         [_init("w", w), _init("fc", fc), _init("lo", np.float32(0)),
                          _init("hi", np.float32(6)), _init("shape", np.array([-1, 8]))])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=7)


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("opset", [11, 12])
def test_old_opsets_are_upgraded_and_match_onnxruntime(opset):
    model = _paddle_style(opset)
    x = RNG.standard_normal((5, 3, 12, 12)).astype(np.float32)
    graph = load_onnx(model)
    np.testing.assert_allclose(run(graph, {"x": x})["y"], _ort(model, {"x": x})[0], rtol=1e-5,
                               atol=1e-7)


def test_minus_one_dims_are_dynamic():
    """-1 is no size: any batch runs (before, -1 was taken as a size and broadcasting failed)."""
    graph = load_onnx(_paddle_style(11))
    batch = graph.values["x"].shape[0]
    assert isinstance(batch, str) and graph.values["x"].shape[1:] == (3, 12, 12)
    for n in (1, 3):
        assert run(graph, {"x": np.zeros((n, 3, 12, 12), np.float32)})["y"].shape == (n, 4)


def test_minus_one_dims_can_be_pinned():
    import sbcompile

    graph = load_onnx(_paddle_style(11), input_shapes={"x": [2, 3, 12, 12]})
    assert graph.values["x"].shape == (2, 3, 12, 12)
    model = sbcompile.compile(_paddle_style(11), input_shapes={"x": [2, 3, 12, 12]})
    assert model.graph.values["x"].shape == (2, 3, 12, 12)


def test_stale_declared_output_shape_gives_way_to_inference():
    """torch 1.x wrote a rank-2 output shape for a rank-3 result (the ddddocr reader does)."""
    nodes = [h.make_node("Reshape", ["x", "s"], ["y"])]
    graph = h.make_graph(nodes, "stale", [h.make_tensor_value_info("x", T.FLOAT, [2, 6])],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, "n"])],
                         [_init("s", np.array([2, 3, 2]))])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=7)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    ir = load_onnx(model)
    assert ir.values["y"].shape == (2, 3, 2)
    np.testing.assert_array_equal(run(ir, {"x": x})["y"], _ort(model, {"x": x})[0])


def test_infinite_clip_bound_initializer():
    """A Clip whose max is an initializer holding +Inf (openWakeWord's mel front end)."""
    nodes = [h.make_node("Clip", ["x", "lo", "hi"], ["y"])]
    graph = h.make_graph(nodes, "clip", [h.make_tensor_value_info("x", T.FLOAT, [3])],
                         [h.make_tensor_value_info("y", T.FLOAT, [3])],
                         [_init("lo", np.float32(1e-10)), _init("hi", np.float32(np.inf))])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], ir_version=7)
    x = np.array([-1.0, 0.5, 1e30], np.float32)
    np.testing.assert_array_equal(run(load_onnx(model), {"x": x})["y"], _ort(model, {"x": x})[0])


@pytest.mark.parametrize("n", [32, 33])
def test_static_batch_model_streams_a_larger_calibration_file(n):
    """A model exported with batch 2 calibrates on 32 (or 33: one left over) samples."""
    model = _paddle_style(13, batch=2)
    calib = {"x": RNG.standard_normal((n, 3, 12, 12)).astype(np.float32)}
    art = compile_model(model, "loihi2", calib=calib)
    assert art.report["calibration_samples"] == 32
    x = calib["x"][:2]
    spiked = run(art.graph, {"x": x})["y"]
    assert spiked.shape == (2, 4) and np.all(np.isfinite(spiked))


def test_calibration_smaller_than_the_static_batch_is_refused():
    from sbcompile.errors import SbcError

    model = _paddle_style(13, batch=4)
    with pytest.raises(SbcError, match="static batch of 4.*only 3 samples"):
        compile_model(model, "loihi2",
                      calib={"x": np.zeros((3, 3, 12, 12), np.float32)})


def test_calibration_as_a_list_of_feeds():
    """Inputs that share no batch axis (a sequence and its recurrent state) calibrate from a
    list of whole feeds."""
    model = _paddle_style(13, batch=1)
    feeds = [{"x": RNG.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(4)]
    art = compile_model(model, "loihi2", calib=feeds)
    assert art.report["calibration_samples"] == 4
