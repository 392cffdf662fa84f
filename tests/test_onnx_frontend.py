"""The ONNX frontend on small hand-built graphs: each canonicalisation (checked by the IR ops it
yields and by outputs against onnxruntime within 1e-5 relative), the reference semantics of
attention and GLA, and every kind of bad input (error type and the culprit named)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from sbcompile.errors import SbcError, UnsupportedError
from sbcompile.frontends.onnx_frontend import load_onnx, support_table
from sbcompile.ir.validate import validate
from sbcompile.runtime.reference import evaluate, run
from sbcompile.runtime.reference_float import FLOAT_KERNELS

RNG = np.random.default_rng(7)


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits=(), opset=18, domains=()) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                         [h.make_tensor_value_info(n, t, s) for n, t, s in outputs], list(inits))
    imports = [h.make_opsetid("", opset)] + [h.make_opsetid(d, v) for d, v in domains]
    return h.make_model(graph, opset_imports=imports, ir_version=10)


def _randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _against_ort(model: onnx.ModelProto, feeds: dict, rtol: float = 1e-5) -> list[str]:
    """Load the model, run it on the reference interpreter and onnxruntime; return the IR ops."""
    graph = load_onnx(model)
    json.dumps(graph.to_json(), allow_nan=False)  # the artifact's strict JSON
    got = run(graph, feeds)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    for (name, value), expected in zip(got.items(), want):
        scale = float(np.max(np.abs(expected))) or 1.0
        err = float(np.max(np.abs(value.astype(np.float64) - expected))) / scale
        assert err <= rtol, f"{name}: relative error {err:.2e}"
    return [n.op for n in graph.nodes]


# ---- linear, conv, batch norm -------------------------------------------------------------------
def test_gemm_becomes_linear_with_bias():
    w, c = _randn(5, 8), _randn(5)
    model = _model([h.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)],
                   [("x", T.FLOAT, [3, 8])], [("y", T.FLOAT, [3, 5])],
                   [_init("w", w), _init("c", c)])
    assert _against_ort(model, {"x": _randn(3, 8)}) == ["linear"]


def test_gemm_with_transposed_input_and_full_c():
    model = _model([h.make_node("Gemm", ["x", "w", "c"], ["y"], transA=1)],
                   [("x", T.FLOAT, [8, 3])], [("y", T.FLOAT, [3, 5])],
                   [_init("w", _randn(8, 5)), _init("c", _randn(3, 5))])
    assert _against_ort(model, {"x": _randn(8, 3)}) == ["transpose", "linear", "add"]


def test_matmul_add_becomes_linear_on_3d_input():
    model = _model([h.make_node("MatMul", ["x", "w"], ["t"]),
                    h.make_node("Add", ["b", "t"], ["y"])],
                   [("x", T.FLOAT, ["batch", 4, 8])], [("y", T.FLOAT, ["batch", 4, 6])],
                   [_init("w", _randn(8, 6)), _init("b", _randn(6))])
    graph = load_onnx(model)
    assert [n.op for n in graph.nodes] == ["linear"]
    assert graph.values["x"].shape == ("batch", 4, 8)  # symbolic batch kept
    assert graph.params[graph.nodes[0].inputs[1]].shape == (6, 8)  # weight stored [N, K]
    assert _against_ort(model, {"x": _randn(2, 4, 8)}) == ["linear"]


def _bn_inits(prefix: str, channels: int) -> list:
    return [_init(f"{prefix}_s", 1 + 0.2 * _randn(channels)),
            _init(f"{prefix}_b", _randn(channels)),
            _init(f"{prefix}_m", 0.3 * _randn(channels)),
            _init(f"{prefix}_v", 0.5 + RNG.random(channels).astype(np.float32))]


def test_batch_norm_folds_into_conv():
    nodes = [h.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"],
                         epsilon=1e-3)]
    model = _model(nodes, [("x", T.FLOAT, [2, 3, 6, 6])], [("y", T.FLOAT, [2, 4, 6, 6])],
                   [_init("w", _randn(4, 3, 3, 3)), _init("cb", _randn(4)), *_bn_inits("bn", 4)])
    assert _against_ort(model, {"x": _randn(2, 3, 6, 6)}) == ["conv"]


def test_batch_norm_folds_into_gemm():
    nodes = [h.make_node("Gemm", ["x", "w"], ["t"], transB=1),
             h.make_node("BatchNormalization", ["t", "bn_s", "bn_b", "bn_m", "bn_v"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [3, 8])], [("y", T.FLOAT, [3, 4])],
                   [_init("w", _randn(4, 8)), *_bn_inits("bn", 4)])
    assert _against_ort(model, {"x": _randn(3, 8)}) == ["linear"]


def test_batch_norm_stays_when_conv_output_has_other_consumers():
    nodes = [h.make_node("Conv", ["x", "w"], ["c"]),
             h.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"]),
             h.make_node("Add", ["n", "c"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [1, 2, 5, 5])], [("y", T.FLOAT, [1, 3, 3, 3])],
                   [_init("w", _randn(3, 2, 3, 3)), *_bn_inits("bn", 3)])
    assert _against_ort(model, {"x": _randn(1, 2, 5, 5)}) == ["conv", "batch_norm", "add"]


# ---- activations --------------------------------------------------------------------------------
def _erf_gelu_nodes(order: str) -> tuple[list, list]:
    inits = [_init("sqrt2", np.float32(math.sqrt(2))), _init("one", np.float32(1)),
             _init("half", np.float32(0.5))]
    nodes = [h.make_node("Div", ["x", "sqrt2"], ["d"]), h.make_node("Erf", ["d"], ["e"]),
             h.make_node("Add", ["e", "one"], ["p"])]
    if order == "torch":  # (x * (1 + erf)) * 0.5
        nodes += [h.make_node("Mul", ["x", "p"], ["m"]), h.make_node("Mul", ["m", "half"], ["y"])]
    else:  # (x * 0.5) * (1 + erf), BERT's spelling
        nodes += [h.make_node("Mul", ["x", "half"], ["m"]), h.make_node("Mul", ["m", "p"], ["y"])]
    return nodes, inits


@pytest.mark.parametrize("order", ["torch", "bert"])
def test_gelu_from_erf(order):
    nodes, inits = _erf_gelu_nodes(order)
    model = _model(nodes, [("x", T.FLOAT, [4, 16])], [("y", T.FLOAT, [4, 16])], inits)
    assert _against_ort(model, {"x": 3 * _randn(4, 16)}) == ["gelu"]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_op(approximate):
    model = _model([h.make_node("Gelu", ["x"], ["y"], approximate=approximate)],
                   [("x", T.FLOAT, [4, 16])], [("y", T.FLOAT, [4, 16])], opset=20)
    assert _against_ort(model, {"x": 3 * _randn(4, 16)}) == ["gelu"]


def test_silu_from_sigmoid():
    model = _model([h.make_node("Sigmoid", ["x"], ["s"]), h.make_node("Mul", ["s", "x"], ["y"])],
                   [("x", T.FLOAT, [4, 16])], [("y", T.FLOAT, [4, 16])])
    assert _against_ort(model, {"x": 3 * _randn(4, 16)}) == ["silu"]


def test_sigmoid_feeding_other_consumers_is_not_silu():
    model = _model([h.make_node("Sigmoid", ["x"], ["s"]), h.make_node("Mul", ["s", "x"], ["m"]),
                    h.make_node("Add", ["m", "s"], ["y"])],
                   [("x", T.FLOAT, [4, 16])], [("y", T.FLOAT, [4, 16])])
    assert _against_ort(model, {"x": _randn(4, 16)}) == ["sigmoid", "mul", "add"]


# ---- normalisation ------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["div", "reciprocal"])
def test_rms_norm_from_parts(spelling):
    inits = [_init("two", np.float32(2)), _init("axes", np.array([-1])),
             _init("eps", np.float32(1e-6)), _init("w", _randn(16))]
    nodes = [h.make_node("Pow", ["x", "two"], ["sq"]),
             h.make_node("ReduceMean", ["sq", "axes"], ["ms"]),
             h.make_node("Add", ["ms", "eps"], ["a"]), h.make_node("Sqrt", ["a"], ["r"])]
    if spelling == "div":
        nodes.append(h.make_node("Div", ["x", "r"], ["n"]))
    else:
        nodes += [h.make_node("Reciprocal", ["r"], ["i"]), h.make_node("Mul", ["x", "i"], ["n"])]
    nodes.append(h.make_node("Mul", ["w", "n"], ["y"]))
    model = _model(nodes, [("x", T.FLOAT, [2, 5, 16])], [("y", T.FLOAT, [2, 5, 16])], inits)
    assert _against_ort(model, {"x": _randn(2, 5, 16)}) == ["rms_norm"]


def test_rms_normalization_op():
    model = _model([h.make_node("RMSNormalization", ["x", "w"], ["y"], epsilon=1e-5)],
                   [("x", T.FLOAT, [2, 5, 16])], [("y", T.FLOAT, [2, 5, 16])],
                   [_init("w", _randn(16))], opset=23)
    assert _against_ort(model, {"x": _randn(2, 5, 16)}) == ["rms_norm"]


def test_layer_normalization_op():
    model = _model([h.make_node("LayerNormalization", ["x", "w", "b"], ["y"], epsilon=1e-12)],
                   [("x", T.FLOAT, [2, 5, 16])], [("y", T.FLOAT, [2, 5, 16])],
                   [_init("w", _randn(16)), _init("b", _randn(16))])
    assert _against_ort(model, {"x": _randn(2, 5, 16)}) == ["layer_norm"]


def test_layer_norm_from_parts():
    inits = [_init("axes", np.array([-1])), _init("two", np.float32(2)),
             _init("eps", np.float32(1e-5)), _init("w", _randn(16)), _init("b", _randn(16))]
    nodes = [h.make_node("ReduceMean", ["x", "axes"], ["mu"]),
             h.make_node("Sub", ["x", "mu"], ["d"]), h.make_node("Pow", ["d", "two"], ["sq"]),
             h.make_node("ReduceMean", ["sq", "axes"], ["var"]),
             h.make_node("Add", ["var", "eps"], ["a"]), h.make_node("Sqrt", ["a"], ["r"]),
             h.make_node("Div", ["d", "r"], ["n"]), h.make_node("Mul", ["n", "w"], ["s"]),
             h.make_node("Add", ["s", "b"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [2, 5, 16])], [("y", T.FLOAT, [2, 5, 16])], inits)
    assert _against_ort(model, {"x": 2 + _randn(2, 5, 16)}) == ["layer_norm"]


# ---- attention ----------------------------------------------------------------------------------
def _attention_model(mask: np.ndarray | None, scale_on: str = "scores") -> onnx.ModelProto:
    d = 8
    inits = [_init("c", np.float32(math.sqrt(d)))]
    nodes = [h.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])]
    if scale_on == "scores":
        nodes += [h.make_node("MatMul", ["q", "kt"], ["qk"]),
                  h.make_node("Div", ["qk", "c"], ["s"])]
    else:  # torch's SDPA decomposition: sqrt(scale) on q and on k^T
        inits.append(_init("r", np.float32(d ** -0.25)))
        nodes += [h.make_node("Mul", ["q", "r"], ["qs"]), h.make_node("Mul", ["kt", "r"], ["ks"]),
                  h.make_node("MatMul", ["qs", "ks"], ["s"])]
    scores = "s"
    if mask is not None:
        inits.append(_init("mask", mask))
        nodes.append(h.make_node("Add", ["s", "mask"], ["sm"]))
        scores = "sm"
    nodes += [h.make_node("Softmax", [scores], ["p"], axis=-1),
              h.make_node("MatMul", ["p", "v"], ["y"])]
    shape = [2, 3, 6, d]
    return _model(nodes, [(n, T.FLOAT, shape) for n in "qkv"], [("y", T.FLOAT, shape)], inits)


def _qkv() -> dict:
    return {n: _randn(2, 3, 6, 8) for n in "qkv"}


def test_attention_from_matmul_softmax_matmul():
    assert _against_ort(_attention_model(None), _qkv()) == ["attention"]
    assert _against_ort(_attention_model(None, scale_on="qk"), _qkv()) == ["attention"]


def test_attention_with_padding_mask_keeps_the_mask():
    mask = np.where(RNG.random((2, 1, 1, 6)) < 0.3, -1e4, 0.0).astype(np.float32)
    graph = load_onnx(_attention_model(mask))
    assert [n.op for n in graph.nodes] == ["attention"] and len(graph.nodes[0].inputs) == 4
    assert _against_ort(_attention_model(mask), _qkv()) == ["attention"]


@pytest.mark.parametrize("window", [0, 3])
def test_constant_causal_mask_becomes_causal_window(window):
    i, j = np.arange(6)[:, None], np.arange(6)[None, :]
    keep = (j <= i) & ((j > i - window) if window else True)
    mask = np.where(keep, 0.0, np.finfo(np.float32).min).astype(np.float32)
    graph = load_onnx(_attention_model(mask))
    (node,) = graph.nodes
    assert node.op == "attention" and node.inputs == ["q", "k", "v"]
    assert node.attrs["causal"] == 1 and node.attrs["window"] == window
    assert _against_ort(_attention_model(mask), _qkv()) == ["attention"]


def test_repeated_kv_heads_become_gqa_attention():
    """Llama's repeat_kv (unsqueeze, expand, reshape) before eager attention: the attention node
    reads the 2 kv heads directly."""
    nodes = [h.make_node("Transpose", ["kr"], ["kt"], perm=[0, 1, 3, 2]),
             h.make_node("MatMul", ["q", "kt"], ["s"]),
             h.make_node("Softmax", ["s"], ["p"], axis=-1),
             h.make_node("MatMul", ["p", "vr"], ["y"])]
    for name in "kv":
        nodes = [h.make_node("Unsqueeze", [name, "ax"], [f"{name}u"]),
                 h.make_node("Expand", [f"{name}u", "rep"], [f"{name}e"]),
                 h.make_node("Reshape", [f"{name}e", "full"], [f"{name}r"])] + nodes
    inits = [_init("ax", np.array([2])), _init("rep", np.array([1, 2, 2, 5, 8])),
             _init("full", np.array([1, 4, 5, 8]))]
    model = _model(nodes, [("q", T.FLOAT, [1, 4, 5, 8]), ("k", T.FLOAT, [1, 2, 5, 8]),
                           ("v", T.FLOAT, [1, 2, 5, 8])], [("y", T.FLOAT, [1, 4, 5, 8])], inits)
    graph = load_onnx(model)
    (node,) = graph.nodes
    assert node.op == "attention" and node.inputs == ["q", "k", "v"]
    feeds = {"q": _randn(1, 4, 5, 8), "k": _randn(1, 2, 5, 8), "v": _randn(1, 2, 5, 8)}
    assert _against_ort(model, feeds) == ["attention"]


def _naive_attention(q, k, v, keep, scale):
    """Per head and query row, written independently of the kernel."""
    b, hq, tq, _ = q.shape
    rep = hq // k.shape[1]
    out = np.zeros(q.shape[:3] + (v.shape[-1],))
    for bi in range(b):
        for hi in range(hq):
            for t in range(tq):
                s = [float(q[bi, hi, t] @ k[bi, hi // rep, j]) * scale if keep[bi, hi, t, j]
                     else None for j in range(k.shape[2])]
                kept = [x for x in s if x is not None]
                if not kept:
                    continue
                top = max(kept)
                w = [math.exp(x - top) if x is not None else 0.0 for x in s]
                out[bi, hi, t] = sum(wj * v[bi, hi // rep, j] for j, wj in enumerate(w)) / sum(w)
    return out


@pytest.mark.parametrize("causal,window", [(0, 0), (1, 0), (1, 2)])
def test_attention_kernel_gqa_causal_window_bool_mask(causal, window):
    q, k, v = _randn(2, 4, 3, 5), _randn(2, 2, 5, 5), _randn(2, 2, 5, 6)
    bool_mask = RNG.random((2, 1, 3, 5)) < 0.8
    i, j = np.arange(3)[:, None] + 2, np.arange(5)[None, :]
    band = np.ones((3, 5), bool)
    if causal:
        band &= j <= i
    if window:
        band &= j > i - window
    attrs = {"scale": 0.3, "causal": causal, "window": window}
    got = FLOAT_KERNELS["attention"](attrs, q, k, v, bool_mask)
    keep = np.broadcast_to(bool_mask & band, (2, 4, 3, 5))
    np.testing.assert_allclose(got, _naive_attention(q, k, v, keep, 0.3), rtol=1e-5, atol=1e-6)


def test_gla_custom_op_matches_the_parallel_form():
    """The recurrent kernel behind ai.sbcompile::GatedLinearAttention against the closed form
    y_t = scale * sum_{s <= t} (q_t * exp(G_t - G_s)) . k_s  v_s, G the running sum of g."""
    b, t, hds, dk, dv = 2, 5, 3, 4, 6
    q, k, v = _randn(b, t, hds, dk), _randn(b, t, hds, dk), _randn(b, t, hds, dv)
    g = -np.abs(_randn(b, t, hds, dk)) / 4
    node = h.make_node("GatedLinearAttention", list("qkvg"), ["y"], domain="ai.sbcompile",
                       scale=0.5)
    model = _model([node], [(n, T.FLOAT, [b, t, hds, dk]) for n in "qkg"] + [
        ("v", T.FLOAT, [b, t, hds, dv])], [("y", T.FLOAT, None)],
        domains=[("ai.sbcompile", 1)])
    graph = load_onnx(model)
    assert [n.op for n in graph.nodes] == ["gla"] and graph.values["y"].shape == (b, t, hds, dv)
    got = run(graph, {"q": q, "k": k, "v": v, "g": g})["y"]
    cum = np.cumsum(g.astype(np.float64), axis=1)
    want = np.zeros((b, t, hds, dv))
    for ti in range(t):
        for si in range(ti + 1):
            w = np.einsum("bhk,bhk->bh", q[:, ti] * np.exp(cum[:, ti] - cum[:, si]), k[:, si])
            want[:, ti] += 0.5 * w[..., None] * v[:, si]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_integer_division_truncates_like_onnxruntime():
    model = _model([h.make_node("Div", ["a", "b"], ["y"])],
                   [("a", T.INT64, [6]), ("b", T.INT64, [6])], [("y", T.INT64, [6])])
    feeds = {"a": np.array([-7, 7, -7, 7, -1, 6]), "b": np.array([2, -2, -2, 2, 3, -3])}
    got = run(load_onnx(model), feeds)["y"]
    want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, [-3, -3, 3, 3, 0, -2])


# ---- folding and the support table --------------------------------------------------------------
def test_shape_arithmetic_folds_and_dynamic_batch_survives():
    """Reshape to [batch, -1] computed from Shape: the static part folds, the batch stays."""
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             h.make_node("Unsqueeze", ["b", "ax"], ["b1"]),
             h.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
             h.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [_init("zero", np.array(0)), _init("ax", np.array([0])),
             _init("minus1", np.array([-1]))]
    model = _model(nodes, [("x", T.FLOAT, ["n", 3, 4])], [("y", T.FLOAT, ["n", 12])], inits)
    assert _against_ort(model, {"x": _randn(5, 3, 4)})[-1] == "reshape"
    static = load_onnx(model, input_shapes={"x": [2, 3, 4]})
    assert [n.op for n in static.nodes] == ["reshape"]  # all shape arithmetic folded


def test_support_table_rows():
    nodes, inits = _erf_gelu_nodes("torch")
    nodes = [h.make_node("Constant", [], ["c"], value=_init("c", np.float32(2)), name="two"),
             h.make_node("Mul", ["c", "c"], ["c4"], name="four"), *nodes,
             h.make_node("Add", ["y", "c4"], ["s"]), h.make_node("Bernoulli", ["s"], ["z"])]
    model = _model(nodes, [("x", T.FLOAT, [4, 16])], [("z", T.FLOAT, [4, 16])], inits)
    rows = support_table(model)
    assert len(rows) == 9 and len({r["name"] for r in rows}) == 9
    by_op = {r["op_type"]: r for r in rows}
    unsupported = by_op["Bernoulli"]
    assert unsupported["status"] == "unsupported" and "Bernoulli" in unsupported["reason"]
    assert by_op["Erf"]["status"] == "supported" and by_op["Erf"]["ir_ops"] == ["gelu"]
    folded = next(r for r in rows if r["name"] == "four")
    assert folded["status"] == "supported" and folded["reason"] == "folded to a constant"
    with pytest.raises(UnsupportedError, match="Bernoulli"):
        load_onnx(model)


# ---- bad input ----------------------------------------------------------------------------------
def _mlp_model() -> onnx.ModelProto:
    return _model([h.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
                   h.make_node("Relu", ["h"], ["y"], name="act")],
                  [("x", T.FLOAT, ["batch", 8])], [("y", T.FLOAT, ["batch", 4])],
                  [_init("w", _randn(4, 8)), _init("b", _randn(4))])


def test_valid_model_from_file_bytes_and_proto(tmp_path: Path):
    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp_model(), path)
    for source in (path, str(path), path.read_bytes(), _mlp_model()):
        graph = load_onnx(source)
        validate(graph)
        assert [n.op for n in graph.nodes] == ["linear", "relu"]


def test_truncated_file(tmp_path: Path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(_mlp_model().SerializeToString()[:-7])
    with pytest.raises(SbcError, match="cut.onnx"):
        load_onnx(path)


def test_non_onnx_file(tmp_path: Path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    with pytest.raises(SbcError, match="notes.onnx.*not"):
        load_onnx(path)
    with pytest.raises(SbcError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")


def test_unsupported_op_names_node_and_op_type():
    model = _model([h.make_node("Bernoulli", ["x"], ["y"], name="odd")], [("x", T.FLOAT, [2])],
                   [("y", T.FLOAT, [2])])
    with pytest.raises(UnsupportedError, match="'odd'.*Bernoulli"):
        load_onnx(model)


def test_unsupported_attribute_names_node():
    model = _model([h.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2],
                                storage_order=1)],
                   [("x", T.FLOAT, [1, 1, 4])], [("y", T.FLOAT, [1, 1, 3])])
    with pytest.raises(UnsupportedError, match="'mp'.*storage_order"):
        load_onnx(model)


def test_future_opset_is_refused():
    model = _mlp_model()
    model.opset_import[0].version = onnx.defs.onnx_opset_version() + 1
    with pytest.raises(UnsupportedError, match=f"opset {onnx.defs.onnx_opset_version() + 1}"):
        load_onnx(model)


def test_missing_initializer():
    model = _mlp_model()
    del model.graph.initializer[1]  # "b"
    with pytest.raises(SbcError, match="'b'.*missing initializer"):
        load_onnx(model)


def test_cycle():
    model = _model([h.make_node("Relu", ["x2"], ["x1"], name="first"),
                    h.make_node("Relu", ["x1"], ["x2"], name="second"),
                    h.make_node("Add", ["x", "x2"], ["y"])],
                   [("x", T.FLOAT, [2])], [("y", T.FLOAT, [2])])
    with pytest.raises(SbcError, match="cycle through node '(first|second)'"):
        load_onnx(model)


def test_input_shape_contradicting_the_model():
    with pytest.raises(SbcError, match="input 'x'.*contradicts"):
        load_onnx(_mlp_model(), input_shapes={"x": [2, 9]})
    with pytest.raises(SbcError, match="'z'.*not an input"):
        load_onnx(_mlp_model(), input_shapes={"z": [2, 8]})
    # a shape the declared dims allow, but the weights do not
    loose = _mlp_model()
    loose.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "k"
    with pytest.raises(SbcError, match="shape inference failed"):
        load_onnx(loose, input_shapes={"x": [2, 9]})
    assert load_onnx(_mlp_model(), input_shapes={"x": [2, 8]}).values["x"].shape == (2, 8)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_initializer(bad):
    model = _mlp_model()
    w = _randn(4, 8)
    w[1, 2] = bad
    model.graph.initializer[0].CopyFrom(_init("w", w))
    with pytest.raises(SbcError, match="initializer 'w'.*NaN or Inf"):
        load_onnx(model)


def test_minus_inf_mask_constant_is_kept_exactly():
    """A -inf fill (torch's masked_fill) is no parameter but a constant_of_shape node; scores
    that are output before softmax keep their -inf."""
    nodes = [h.make_node("Constant", [], ["ninf"], value=_init("v", np.float32(-np.inf))),
             h.make_node("Where", ["m", "x", "ninf"], ["y"])]
    model = _model(nodes, [("x", T.FLOAT, [2, 3]), ("m", T.BOOL, [2, 3])],
                   [("y", T.FLOAT, [2, 3])])
    graph = load_onnx(model)
    assert "nan" not in json.dumps(graph.to_json(), allow_nan=False).lower()
    x, m = _randn(2, 3), RNG.random((2, 3)) < 0.5
    np.testing.assert_array_equal(run(graph, {"x": x, "m": m})["y"], np.where(m, x, -np.inf))


def test_intermediate_values_can_be_kept():
    graph = load_onnx(_mlp_model())
    env = evaluate(graph, {"x": _randn(3, 8)}, keep=["h"])
    assert env["h"].shape == (3, 4) and np.all(env["y"] == np.maximum(env["h"], 0))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
