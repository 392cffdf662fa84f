"""The ops real exported models use (issue 14), each on a small model built here: the float graph
on the reference interpreter equals onnxruntime on the original ONNX within 1e-5 relative (integer
outputs exactly), and the graph exported back to ONNX (the onnx-qdq exporter's float forms) runs
in onnxruntime to the same numbers."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from sbcompile.backends.export_onnx_qdq import to_onnx
from sbcompile.errors import UnsupportedError
from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.runtime.reference import run

RNG = np.random.default_rng(14)


def _randn(*shape, scale=1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, inits=(), opset=21) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                         [h.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                         [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=10)


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def _onnx_reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """onnx's own reference evaluator: onnxruntime has no batch-first (layout=1) recurrences."""
    return ReferenceEvaluator(model).run(None, feeds)


def _close(got: np.ndarray, want: np.ndarray, rtol: float, what: str) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    scale = float(np.max(np.abs(want))) if want.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    assert err <= rtol * (scale or 1.0), f"{what}: relative error {err / (scale or 1.0):.2e}"


def check(model: onnx.ModelProto, feeds: dict, rtol: float = 1e-5, oracle=None) -> list[str]:
    """Reference vs onnxruntime (or ``oracle(model, feeds)`` where onnxruntime lacks the form),
    and the exported graph vs the reference; returns the IR ops."""
    graph = load_onnx(model)
    json.dumps(graph.to_json(), allow_nan=False)
    got = run(graph, feeds)
    for (name, value), want in zip(got.items(), (oracle or _ort)(model, feeds)):
        _close(value, want, rtol, f"{name} vs onnxruntime")
    for (name, value), back in zip(got.items(), _ort(to_onnx(graph), feeds)):
        _close(back, value, rtol, f"{name} exported")
    return sorted({n.op for n in graph.nodes})


def unary(op: str, x: np.ndarray, **attrs) -> list[str]:
    model = _model([h.make_node(op, ["x"], ["y"], **attrs)], [("x", T.FLOAT, list(x.shape))],
                   [("y", T.FLOAT, None)])
    return check(model, {"x": x})


# ---- activations and elementwise ----------------------------------------------------------------
@pytest.mark.parametrize("op,attrs", [
    ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}),
    ("Mish", {}), ("Softplus", {}), ("Softsign", {}), ("Selu", {}),
    ("Selu", {"alpha": 1.5, "gamma": 0.9}), ("Elu", {}), ("Elu", {"alpha": 0.5}),
    ("Celu", {"alpha": 2.0}), ("ThresholdedRelu", {"alpha": 0.7}),
    ("Shrink", {"lambd": 0.8, "bias": 0.3}), ("Tan", {}), ("Atan", {}), ("Sinh", {}),
    ("Cosh", {}), ("Asinh", {}), ("Round", {}), ("Sign", {})])
def test_activation_matches_onnxruntime(op, attrs):
    x = _randn(3, 17, scale=3.0)
    x[0, :6] = [0.0, 0.5, 1.5, -2.5, 30.0, -30.0]  # ties for Round, extremes for Softplus
    unary(op, x, **attrs)


@pytest.mark.parametrize("op", ["Asin", "Acos", "Atanh"])
def test_inverse_trig_inside_its_domain(op):
    unary(op, np.clip(_randn(4, 9), -0.95, 0.95))


def test_acosh_above_one():
    unary("Acosh", 1.0 + np.abs(_randn(4, 9)) * 3)


def test_softplus_is_exact_where_the_naive_form_cancels():
    x = np.array([[-40.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 40.0]], np.float32)
    graph = load_onnx(_model([h.make_node("Softplus", ["x"], ["y"])], [("x", T.FLOAT, [1, 7])],
                             [("y", T.FLOAT, [1, 7])]))
    want = np.log1p(np.exp(x.astype(np.float64))).astype(np.float32)
    np.testing.assert_allclose(run(graph, {"x": x})["y"], want, rtol=1e-7)


def test_swish():
    model = _model([h.make_node("Swish", ["x"], ["y"], alpha=0.6)], [("x", T.FLOAT, [2, 8])],
                   [("y", T.FLOAT, [2, 8])], opset=24)
    check(model, {"x": _randn(2, 8, scale=3.0)})


def test_xor():
    a, b = RNG.random((3, 4)) > 0.5, RNG.random((3, 4)) > 0.5
    model = _model([h.make_node("Xor", ["a", "b"], ["y"])], [("a", T.BOOL, [3, 4]),
                                                             ("b", T.BOOL, [3, 4])],
                   [("y", T.BOOL, [3, 4])])
    assert check(model, {"a": a, "b": b}) == ["equal", "not"]


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_argmax_argmin_with_ties(op, last):
    x = np.round(_randn(4, 6) * 1.5).astype(np.float32)  # many ties
    model = _model([h.make_node(op, ["x"], ["y"], axis=1, keepdims=0, select_last_index=last)],
                   [("x", T.FLOAT, [4, 6])], [("y", T.INT64, [4])])
    check(model, {"x": x})


# ---- reductions and norms -----------------------------------------------------------------------
@pytest.mark.parametrize("op", ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
                                "ReduceLogSumExp"])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, 2], 0), (None, 1)])
def test_composite_reductions(op, axes, keepdims):
    x = np.abs(_randn(3, 4, 5)) + 0.1 if op == "ReduceLogSum" else _randn(3, 4, 5, scale=4.0)
    inputs = ["x"] + (["axes"] if axes else [])
    model = _model([h.make_node(op, inputs, ["y"], keepdims=keepdims)], [("x", T.FLOAT, [3, 4, 5])],
                   [("y", T.FLOAT, None)], {"axes": np.array(axes, np.int64)} if axes else {})
    check(model, {"x": x})


def test_reduce_with_runtime_axes():
    model = _model([h.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
                   [("x", T.FLOAT, [3, 4, 5]), ("axes", T.INT64, [1])], [("y", T.FLOAT, [3, 4, 1])])
    check(model, {"x": _randn(3, 4, 5), "axes": np.array([-1], np.int64)})


def test_l2_normalisation_of_a_sentence_embedding():
    """The tail of every sentence-embedding model: mean pooling, then x / ||x||_2."""
    x = _randn(2, 7, 32)
    nodes = [h.make_node("ReduceMean", ["x", "one"], ["pooled"], keepdims=0),
             h.make_node("ReduceL2", ["pooled", "last"], ["norm"], keepdims=1),
             h.make_node("Div", ["pooled", "norm"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [2, 7, 32])], [("y", T.FLOAT, [2, 32])],
                   {"one": np.array([1], np.int64), "last": np.array([-1], np.int64)})
    check(model, {"x": x})
    lp = _model([h.make_node("LpNormalization", ["x"], ["y"], axis=-1, p=2)],
                [("x", T.FLOAT, [2, 7, 32])], [("y", T.FLOAT, [2, 7, 32])])
    check(lp, {"x": x})


def test_instance_and_group_norm():
    x = _randn(2, 6, 5, 4, scale=2.0) + 1.0
    scale, bias = _randn(6), _randn(6)
    model = _model([h.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)],
                   [("x", T.FLOAT, [2, 6, 5, 4])], [("y", T.FLOAT, [2, 6, 5, 4])],
                   {"s": scale, "b": bias})
    check(model, {"x": x})
    model = _model([h.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3,
                                epsilon=1e-4)],
                   [("x", T.FLOAT, [2, 6, 5, 4])], [("y", T.FLOAT, [2, 6, 5, 4])],
                   {"s": scale, "b": bias})
    check(model, {"x": x})


# ---- data movement ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(mode):
    x = _randn(2, 8, 3, 5)
    model = _model([h.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode=mode)],
                   [("x", T.FLOAT, [2, 8, 3, 5])], [("y", T.FLOAT, [2, 2, 6, 10])])
    assert check(model, {"x": x}) == ["reshape", "transpose"]
    model = _model([h.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)],
                   [("x", T.FLOAT, [2, 2, 6, 10])], [("y", T.FLOAT, [2, 8, 3, 5])])
    check(model, {"x": _randn(2, 2, 6, 10)})


def test_one_hot_with_negative_and_out_of_range_indices():
    idx = np.array([[0, 3, -1], [4, -5, 7]], np.int64)
    model = _model([h.make_node("OneHot", ["i", "depth", "values"], ["y"], axis=1)],
                   [("i", T.INT64, [2, 3])], [("y", T.FLOAT, [2, 5, 3])],
                   {"depth": np.array(5, np.int64), "values": np.array([-1.0, 2.0], np.float32)})
    check(model, {"i": idx})


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(exclusive, reverse):
    model = _model([h.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive,
                                reverse=reverse)],
                   [("x", T.FLOAT, [3, 6])], [("y", T.FLOAT, [3, 6])],
                   {"axis": np.array(1, np.int64)})
    check(model, {"x": _randn(3, 6)})


@pytest.mark.parametrize("largest", [1, 0])
def test_topk_keeps_the_lower_index_first_on_ties(largest):
    x = np.round(_randn(3, 9) * 2).astype(np.float32)
    model = _model([h.make_node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=largest)],
                   [("x", T.FLOAT, [3, 9])], [("v", T.FLOAT, [3, 4]), ("i", T.INT64, [3, 4])],
                   {"k": np.array([4], np.int64)})
    check(model, {"x": x})


@pytest.mark.parametrize("equation,shapes", [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("ij->ji", [(3, 4)]), ("i,i", [(6,), (6,)]), ("...ij,jk", [(2, 3, 4), (4, 2)])])
def test_einsum(equation, shapes):
    names = [f"x{i}" for i in range(len(shapes))]
    model = _model([h.make_node("Einsum", names, ["y"], equation=equation)],
                   [(n, T.FLOAT, list(s)) for n, s in zip(names, shapes)], [("y", T.FLOAT, None)])
    check(model, {n: _randn(*s) for n, s in zip(names, shapes)})


# ---- transposed convolution ---------------------------------------------------------------------
@pytest.mark.parametrize("attrs,x_shape,w_shape", [
    ({}, (1, 3, 5, 5), (3, 2, 3, 3)),
    ({"strides": [2, 2]}, (2, 4, 4, 3), (4, 3, 3, 3)),
    ({"strides": [2, 3], "pads": [1, 0, 1, 2], "output_padding": [1, 1]}, (1, 2, 4, 4),
     (2, 3, 3, 3)),
    ({"group": 2, "dilations": [2, 1]}, (1, 4, 5, 5), (4, 2, 3, 2)),
    ({"strides": [2], "output_shape": [12]}, (1, 2, 5), (2, 3, 3)),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (1, 2, 3, 3), (2, 2, 4, 4)),
    ({"strides": [1, 2, 2], "pads": [1, 1, 1, 1, 1, 1]}, (1, 2, 3, 4, 4), (2, 2, 3, 3, 3)),
], ids=["plain", "stride", "pads-output-padding", "group-dilation", "output-shape-1d",
        "same-upper", "3d"])
def test_conv_transpose(attrs, x_shape, w_shape):
    model = _model([h.make_node("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)],
                   [("x", T.FLOAT, list(x_shape))], [("y", T.FLOAT, None)],
                   {"w": _randn(*w_shape), "b": _randn(w_shape[1] * attrs.get("group", 1))})
    assert check(model, {"x": _randn(*x_shape)}) == ["conv_transpose"]


# ---- resize -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,coordinates,extra", [
    ("nearest", "asymmetric", {"nearest_mode": "floor"}),
    ("nearest", "half_pixel", {"nearest_mode": "round_prefer_ceil"}),
    ("nearest", "align_corners", {}),
    ("linear", "half_pixel", {}), ("linear", "align_corners", {}),
    ("linear", "pytorch_half_pixel", {}), ("linear", "asymmetric", {}),
    ("linear", "half_pixel_symmetric", {}),
    ("cubic", "half_pixel", {}), ("cubic", "align_corners", {"cubic_coeff_a": -0.5}),
    ("cubic", "half_pixel", {"exclude_outside": 1}),
])
@pytest.mark.parametrize("scales", [[1.0, 1.0, 2.0, 1.5], [1.0, 1.0, 0.6, 0.5]])
def test_resize_by_scales(mode, coordinates, extra, scales):
    model = _model([h.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode,
                                coordinate_transformation_mode=coordinates, **extra)],
                   [("x", T.FLOAT, [1, 2, 5, 6])], [("y", T.FLOAT, None)],
                   {"scales": np.array(scales, np.float32)})
    check(model, {"x": _randn(1, 2, 5, 6)})


@pytest.mark.parametrize("extra", [{}, {"antialias": 1}, {"keep_aspect_ratio_policy": "not_larger",
                                                          "axes": [2, 3]}])
def test_resize_by_sizes(extra):
    sizes = [3, 4] if "axes" in extra else [1, 2, 3, 4]
    model = _model([h.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", **extra)],
                   [("x", T.FLOAT, [1, 2, 7, 9])], [("y", T.FLOAT, None)],
                   {"sizes": np.array(sizes, np.int64)})
    check(model, {"x": _randn(1, 2, 7, 9)})


def test_resize_crop_and_resize_extrapolates():
    model = _model([h.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], mode="linear",
                                coordinate_transformation_mode="tf_crop_and_resize",
                                extrapolation_value=-3.0)],
                   [("x", T.FLOAT, [1, 1, 4, 4])], [("y", T.FLOAT, [1, 1, 3, 3])],
                   {"roi": np.array([0, 0, -0.2, 0.4, 1, 1, 0.6, 1.3], np.float32),
                    "sizes": np.array([1, 1, 3, 3], np.int64)})
    check(model, {"x": _randn(1, 1, 4, 4)})


# ---- recurrent layers ---------------------------------------------------------------------------
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _recurrent(op: str, steps=5, batch=3, size=6, hidden=4, direction="forward", layout=0,
               initial=False, lengths=None, peepholes=False, runtime_weights=False, **attrs):
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    weights = {"W": _randn(dirs, g * hidden, size, scale=0.5),
               "R": _randn(dirs, g * hidden, hidden, scale=0.5),
               "B": _randn(dirs, 2 * g * hidden, scale=0.3)}
    x_shape = [steps, batch, size] if layout == 0 else [batch, steps, size]
    state_shape = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    feeds = {"x": _randn(*x_shape)}
    names = ["x", "W", "R", "B", "", "", ""]
    inputs = [("x", T.FLOAT, x_shape)]
    if lengths is not None:
        weights["lens"] = np.array(lengths, np.int32)
        names[4] = "lens"
    if initial:
        names[5] = "h0"
        feeds["h0"] = _randn(*state_shape)
        inputs.append(("h0", T.FLOAT, state_shape))
        if op == "LSTM":
            names[6] = "c0"
            feeds["c0"] = _randn(*state_shape)
            inputs.append(("c0", T.FLOAT, state_shape))
    if peepholes:
        names.append("P")
        weights["P"] = _randn(dirs, 3 * hidden, scale=0.5)
    if runtime_weights:
        for k in ("W", "R", "B"):
            feeds[k] = weights.pop(k)
            inputs.append((k, T.FLOAT, list(feeds[k].shape)))
    while not names[-1]:
        names.pop()
    outputs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    node = h.make_node(op, names, outputs, hidden_size=hidden, direction=direction,
                       layout=layout, **attrs)
    y_shape = [steps, dirs, batch, hidden] if layout == 0 else [batch, steps, dirs, hidden]
    model = _model([node], inputs, [("y", T.FLOAT, y_shape)] +
                   [(o, T.FLOAT, state_shape) for o in outputs[1:]], weights)
    return model, feeds


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("case", [
    {}, {"direction": "reverse"}, {"direction": "bidirectional", "initial": True},
    {"layout": 1, "initial": True}, {"lengths": [5, 2, 4]},
    {"lengths": [3, 5, 1], "direction": "bidirectional"}, {"clip": 0.8},
    {"runtime_weights": True, "initial": True},
    {"activations": None},
], ids=["forward", "reverse", "bidirectional-initial", "batch-first", "lengths",
        "lengths-bidirectional", "clip", "runtime-weights", "activations"])
def test_recurrent_matches_onnxruntime(op, case):
    case = dict(case)
    if "activations" in case:
        case["activations"] = {"LSTM": ["HardSigmoid", "Softsign", "Relu"],
                               "GRU": ["Sigmoid", "Relu"], "RNN": ["Relu"]}[op]
    model, feeds = _recurrent(op, **case)
    ops = check(model, feeds, oracle=_onnx_reference if case.get("layout") else None)
    assert "linear" in ops


def test_lstm_peepholes_and_gru_linear_before_reset():
    model, feeds = _recurrent("LSTM", peepholes=True, initial=True)
    check(model, feeds)
    model, feeds = _recurrent("GRU", linear_before_reset=1)
    check(model, feeds)
    model, feeds = _recurrent("GRU", linear_before_reset=1, initial=True,
                              direction="bidirectional")
    check(model, feeds)


def test_recurrent_projections_are_linears_that_share_weights():
    """One input projection over the sequence, one recurrent projection per step after the
    first (a zero initial state has none), all steps reading the same R parameter."""
    graph = load_onnx(_recurrent("LSTM", steps=5)[0])
    linears = [n for n in graph.nodes if n.op == "linear"]
    assert len(linears) == 1 + 4
    assert len({n.inputs[1] for n in linears[1:]}) == 1
    assert all(n.inputs[1] in graph.params for n in linears)


def test_recurrent_refusals_name_the_node():
    model, _ = _recurrent("LSTM")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "time"
    model.graph.node[0].name = "encoder_lstm"
    with pytest.raises(UnsupportedError, match="'encoder_lstm'.*sequence length must be static"):
        load_onnx(model)
    model, _ = _recurrent("LSTM", input_forget=1)
    with pytest.raises(UnsupportedError, match="input_forget"):
        load_onnx(model)


# ---- losses -------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted,ignore", [(False, None), (True, None), (True, 2), (False, -1)])
def test_softmax_cross_entropy_and_nll(reduction, weighted, ignore):
    scores, labels = _randn(4, 5, 3, scale=2.0), RNG.integers(0, 5, (4, 3)).astype(np.int64)
    if ignore is not None:
        labels[0, :2] = ignore
    attrs = {"reduction": reduction, **({"ignore_index": ignore} if ignore is not None else {})}
    inputs = ["s", "t"] + (["w"] if weighted else [])
    inits = {"w": np.abs(_randn(5)) + 0.2} if weighted else {}
    loss_shape = [4, 3] if reduction == "none" else []
    model = _model([h.make_node("SoftmaxCrossEntropyLoss", inputs, ["loss", "logp"], **attrs)],
                   [("s", T.FLOAT, [4, 5, 3]), ("t", T.INT64, [4, 3])],
                   [("loss", T.FLOAT, loss_shape), ("logp", T.FLOAT, [4, 5, 3])], inits)
    check(model, {"s": scores, "t": labels})
    model = _model([h.make_node("NegativeLogLikelihoodLoss", inputs, ["loss"], **attrs)],
                   [("s", T.FLOAT, [4, 5, 3]), ("t", T.INT64, [4, 3])],
                   [("loss", T.FLOAT, loss_shape)], inits)
    check(model, {"s": scores, "t": labels})


# ---- selection, scatter / gather, pooling -------------------------------------------------------
def test_hardmax_and_eye_like():
    x = np.round(_randn(3, 5) * 2).astype(np.float32)
    check(_model([h.make_node("Hardmax", ["x"], ["y"], axis=1)], [("x", T.FLOAT, [3, 5])],
                 [("y", T.FLOAT, [3, 5])]), {"x": x})
    check(_model([h.make_node("EyeLike", ["x"], ["y"], k=1)], [("x", T.FLOAT, [3, 5])],
                 [("y", T.FLOAT, [3, 5])]), {"x": x})


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(p):
    model = _model([h.make_node("LpPool", ["x"], ["y"], p=p, kernel_shape=[2, 3], strides=[1, 2],
                                pads=[1, 0, 0, 1])],
                   [("x", T.FLOAT, [1, 2, 5, 6])], [("y", T.FLOAT, None)])
    check(model, {"x": _randn(1, 2, 5, 6)})


def test_cumprod_det_gather_nd():
    model = _model([h.make_node("CumProd", ["x", "axis"], ["y"], exclusive=1, reverse=1)],
                   [("x", T.FLOAT, [3, 5])], [("y", T.FLOAT, [3, 5])],
                   {"axis": np.array(1, np.int64)}, opset=26)
    x = _randn(3, 5) + 1.0
    _close(run(load_onnx(model), {"x": x})["y"], _onnx_reference(model, {"x": x})[0], 1e-6,
           "cumprod")  # onnxruntime and the exporter's opset 23 have no CumProd
    with pytest.raises(UnsupportedError, match="CumProd needs opset 26"):
        to_onnx(load_onnx(model))
    check(_model([h.make_node("Det", ["x"], ["y"])], [("x", T.FLOAT, [2, 4, 4])],
                 [("y", T.FLOAT, [2])]), {"x": _randn(2, 4, 4)}, rtol=1e-4)
    idx = np.array([[[0, 1], [2, -1]], [[1, 0], [0, 2]]], np.int64)
    model = _model([h.make_node("GatherND", ["x", "i"], ["y"], batch_dims=0)],
                   [("x", T.FLOAT, [3, 3, 4])], [("y", T.FLOAT, [2, 2, 4])], {"i": idx})
    check(model, {"x": _randn(3, 3, 4)})


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_elements_and_nd(reduction):
    data = _randn(3, 4)
    idx = np.array([[0, 2], [3, -1], [1, 1]], np.int64)
    model = _model([h.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1,
                                reduction=reduction)],
                   [("x", T.FLOAT, [3, 4]), ("u", T.FLOAT, [3, 2])], [("y", T.FLOAT, [3, 4])],
                   {"i": idx})
    check(model, {"x": data, "u": _randn(3, 2)})
    nd = np.array([[1], [0], [2]], np.int64) if reduction == "none" else \
        np.array([[1], [0], [1]], np.int64)
    model = _model([h.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=reduction)],
                   [("x", T.FLOAT, [3, 4]), ("u", T.FLOAT, [3, 4])], [("y", T.FLOAT, [3, 4])],
                   {"i": nd})
    check(model, {"x": data, "u": _randn(3, 4)})
