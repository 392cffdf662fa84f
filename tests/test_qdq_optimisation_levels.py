"""onnx-qdq exports give the same bits under every onnxruntime optimisation level, the default
session (ORT_ENABLE_ALL) included: integer counts equal the reference's, and the float outputs
equal those of an unoptimised session bit for bit. (onnxruntime's Conv+Mul fusion used to fold a
layer's decode scale into its integer weights, so counts downstream flipped at rounding
boundaries; the export now keeps every integer product behind its int32 Cast.)"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sbcompile.backends.export_onnx_qdq import to_onnx
from sbcompile.demo import EXAMPLE
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).parent))
from models import build_cnn  # noqa: E402

LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


def _run(model_bytes: bytes, feeds: dict, level) -> dict:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _digits():
    held = load_npz(EXAMPLE / "heldout.npz")
    return EXAMPLE / "model.onnx", load_npz(EXAMPLE / "calib.npz"), {"image": held["image"][:96]}


def _cnn():
    zoo = build_cnn()
    return zoo.onnx_bytes(), zoo.inputs, zoo.eval_inputs


@pytest.mark.parametrize("source", [_digits, _cnn], ids=["digits", "cnn"])
@pytest.mark.parametrize("preset", ["spikingbrain", "loihi2", "ternary"])
def test_every_level_gives_the_same_bits(source, preset):
    model, calib, feeds = source()
    art = compile_model(model, preset, calib=calib)
    counts = [info["counts"] for info in art.graph.meta["layers"].values()]
    exported = to_onnx(art.graph, counts).SerializeToString()  # acc stays internal
    want = reference.evaluate(art.graph, feeds, keep=counts)
    unoptimised = _run(exported, feeds, LEVELS[0])
    for level in LEVELS:
        got = _run(exported, feeds, level)
        for name in counts:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{level} {name}")
        for name in art.graph.outputs:
            np.testing.assert_array_equal(got[name], unoptimised[name], err_msg=f"{level}")


def test_wide_linear_splits_its_sums_to_stay_exact():
    """A static-threshold linear with 8192 inputs at count 127 reaches |acc| > 2^24 (float32
    would round it; the export used to refuse the layer): the export sums it in exact chunks."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    rng = np.random.default_rng(0)
    k = 8192
    w = rng.standard_normal((k, 3)).astype(np.float32)
    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "wide",
                         [h.make_tensor_value_info("x", T.FLOAT, ["n", k])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["n", 3])],
                         [onnx.numpy_helper.from_array(w, "w")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    x = np.sign(w[:, 0])[None].repeat(4, 0) * 5.0  # every count at the clamp, signed as W
    art = compile_model(model, "loihi2", calib={"x": x.astype(np.float32)})
    keep = [v for info in art.graph.meta["layers"].values() for v in (info["counts"],
                                                                      info["acc"])]
    exported = to_onnx(art.graph, keep)
    assert "ReduceSum" in {n.op_type for n in exported.graph.node}
    want = reference.evaluate(art.graph, {"x": x.astype(np.float32)}, keep=keep)
    assert np.abs(want[keep[1]]).max() > 2 ** 24
    for level in LEVELS:
        got = _run(exported.SerializeToString(), {"x": x.astype(np.float32)}, level)
        for name in keep:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{level} {name}")


@pytest.mark.parametrize("shape, granularity", [((3, 5), "token"), ((3, 8), "token"),
                                                ((2, 129), "token"), ((2, 1000), "token"),
                                                ((2, 8200), "token"), ((2, 4, 7, 9), "sample"),
                                                ((1, 3, 60, 50), "sample")])
def test_dynamic_threshold_is_the_references_bit_for_bit(shape, granularity):
    """The export's mean(|x|) follows the op table's pairwise order for any row length (short,
    odd, past 8192, several axes); onnxruntime's ReduceMean did not."""
    from sbcompile.ir.graph import Graph, Node, Value

    vth_shape = shape[:-1] + (1,) if granularity == "token" else (shape[0],) + (1,) * (
        len(shape) - 1)
    values = {"x": Value("x", shape, "float32"), "counts": Value("counts", shape, "int32"),
              "vth": Value("vth", vth_shape, "float32")}
    node = Node("enc", "spike_encode", ["x"], ["counts", "vth"],
                {"policy": "dynamic", "granularity": granularity, "k": 3.0, "max_count": None})
    graph = Graph("enc", ["x"], ["counts", "vth"], values, [node], {})
    x = (np.random.default_rng(1).standard_normal(shape) * 3).astype(np.float32)
    want = reference.evaluate(graph, {"x": x})
    got = _run(to_onnx(graph).SerializeToString(), {"x": x}, LEVELS[-1])
    np.testing.assert_array_equal(got["vth"], want["vth"])
    np.testing.assert_array_equal(got["counts"], want["counts"])
