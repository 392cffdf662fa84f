"""The frontend rewrite rules on every spelling they claim: each hand-built (onnx.helper) or
torch-exported graph must become the one fused IR op and agree with onnxruntime on the original
graph within 1e-5 relative. Spellings: GELU (erf and tanh forms, every association and operand
order of x * 0.5 * part, the cube as Pow or products), LayerNorm (variance as Pow(d, 2) or
Mul(d, d), the division as Div or Reciprocal in either order, with and without scale and bias,
axes as an attribute or an input), RMSNorm (the same squares and divisions, scale on either
side), attention (causal and sliding-window band masks, additive or built with Where and -inf,
masks applied through Where, repeat_kv GQA, the mask added first) and the cases that must not
fuse."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

from sbcompile.errors import UnsupportedError
from sbcompile.frontends.onnx_frontend import load_onnx, support_table
from sbcompile.frontends.onnx_model import FUSED_DOMAIN
from sbcompile.frontends.rewrite_activations import PRODUCTS
from sbcompile.frontends.rewrite_norms import DIVISIONS
from sbcompile.frontends.torch_frontend import export_module
from sbcompile.runtime.reference import run

sys.path.insert(0, str(Path(__file__).parent))
from test_onnx_frontend import _against_ort, _init, _model, _randn  # noqa: E402

X = ("x", T.FLOAT, [2, 5, 16])
Y = ("y", T.FLOAT, [2, 5, 16])


def _only(model: onnx.ModelProto, feeds: dict, op: str) -> dict:
    """The model lowers to the single IR op ``op``, matching onnxruntime; its attributes."""
    assert _against_ort(model, feeds) == [op]
    (node,) = load_onnx(model).nodes
    return node.attrs


# ---- GELU ---------------------------------------------------------------------------------------
def _product(product: str, part: str) -> list:
    """Nodes computing y = x * 0.5 * part in one association and operand order."""
    first, second = {
        "(x*p)*h": (("x", part), ("m", "half")), "(p*x)*h": ((part, "x"), ("m", "half")),
        "(x*h)*p": (("x", "half"), ("m", part)), "p*(x*h)": (("x", "half"), (part, "m")),
        "x*(p*h)": ((part, "half"), ("x", "m")), "(p*h)*x": ((part, "half"), ("m", "x"))}[product]
    return [h.make_node("Mul", list(first), ["m"]), h.make_node("Mul", list(second), ["y"])]


def _gelu_model(product: str, form: str, variant: str) -> onnx.ModelProto:
    inits = [_init("half", np.float32(0.5)), _init("one", np.float32(1))]
    if form == "erf":
        inits += [_init("c", np.float32(math.sqrt(2) if variant == "div" else math.sqrt(0.5)))]
        nodes = [h.make_node("Div" if variant == "div" else "Mul", ["x", "c"], ["s"]),
                 h.make_node("Erf", ["s"], ["e"])]
    else:
        inits += [_init("three", np.float32(3)), _init("k", np.float32(0.044715)),
                  _init("c", np.float32(math.sqrt(2 / math.pi)))]
        if variant == "pow":
            nodes = [h.make_node("Pow", ["x", "three"], ["cube"])]
        else:
            nodes = [h.make_node("Mul", ["x", "x"], ["sq"]),
                     h.make_node("Mul", ["x", "sq"], ["cube"])]
        nodes += [h.make_node("Mul", ["k", "cube"], ["t"]), h.make_node("Add", ["t", "x"], ["i"]),
                  h.make_node("Mul", ["c", "i"], ["s"]), h.make_node("Tanh", ["s"], ["e"])]
    nodes += [h.make_node("Add", ["one", "e"], ["p"]), *_product(product, "p")]
    return _model(nodes, [("x", T.FLOAT, [4, 16])], [("y", T.FLOAT, [4, 16])], inits)


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("form,variant", [("erf", "div"), ("erf", "mul"), ("tanh", "pow"),
                                          ("tanh", "products")])
def test_gelu_every_association(product, form, variant):
    attrs = _only(_gelu_model(product, form, variant), {"x": 3 * _randn(4, 16)}, "gelu")
    assert attrs.get("approximate", "none") == ("none" if form == "erf" else "tanh")


def test_gelu_with_a_shared_intermediate_stays_apart():
    """1 + erf(...) read by another node too: fusing would drop a value the graph still needs."""
    model = _gelu_model("(x*p)*h", "erf", "div")
    model.graph.node.append(h.make_node("Add", ["y", "p"], ["z"]))
    model.graph.output.append(h.make_tensor_value_info("z", T.FLOAT, [4, 16]))
    assert "gelu" not in _against_ort(model, {"x": _randn(4, 16)})


# ---- LayerNorm and RMSNorm ----------------------------------------------------------------------
def _divide(division: str, top: str, root: str, out: str) -> list:
    if division == "div":
        return [h.make_node("Div", [top, root], [out])]
    inverse = h.make_node("Reciprocal", [root], [f"{root}_inv"])
    pair = [top, f"{root}_inv"] if division == "mul reciprocal" else [f"{root}_inv", top]
    return [inverse, h.make_node("Mul", pair, [out])]


def _mean(src: str, out: str, opset: int) -> onnx.NodeProto:
    if opset < 18:
        return h.make_node("ReduceMean", [src], [out], axes=[-1])
    return h.make_node("ReduceMean", [src, "axes"], [out])


def _square(square: str, src: str, out: str) -> onnx.NodeProto:
    return h.make_node("Pow", [src, "two"], [out]) if square == "pow" else h.make_node(
        "Mul", [src, src], [out])


def _norm_inits() -> list:
    return [_init("axes", np.array([-1])), _init("two", np.float32(2)),
            _init("eps", np.float32(1e-5)), _init("w", _randn(16)), _init("b", _randn(16))]


def _affine(affine: str, src: str) -> list:
    """[scale, [bias]] nodes ending in y; the scale on either side."""
    if affine == "none":
        return [h.make_node("Identity", [src], ["y"])]
    nodes = [h.make_node("Mul", [src, "w"] if affine != "scale first" else ["w", src],
                         ["y" if affine != "scale bias" else "s"])]
    if affine == "scale bias":
        nodes.append(h.make_node("Add", ["b", "s"], ["y"]))
    return nodes


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("division", DIVISIONS)
@pytest.mark.parametrize("affine,opset", [("none", 18), ("scale", 13), ("scale bias", 18)])
def test_layer_norm_spellings(square, division, affine, opset):
    nodes = [_mean("x", "mu", opset), h.make_node("Sub", ["x", "mu"], ["d"]),
             _square(square, "d", "sq"), _mean("sq", "var", opset),
             h.make_node("Add", ["eps", "var"], ["a"]), h.make_node("Sqrt", ["a"], ["r"]),
             *_divide(division, "d", "r", "n"), *_affine(affine, "n")]
    model = _model(nodes, [X], [Y], _norm_inits(), opset=opset)
    attrs = _only(model, {"x": 2 + _randn(2, 5, 16)}, "layer_norm")
    assert attrs == {"axis": -1, "epsilon": pytest.approx(1e-5)}


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("division", DIVISIONS)
@pytest.mark.parametrize("affine", ["none", "scale", "scale first"])
def test_rms_norm_spellings(square, division, affine):
    nodes = [_square(square, "x", "sq"), _mean("sq", "ms", 18),
             h.make_node("Add", ["ms", "eps"], ["a"]), h.make_node("Sqrt", ["a"], ["r"]),
             *_divide(division, "x", "r", "n"), *_affine(affine, "n")]
    model = _model(nodes, [X], [Y], _norm_inits())
    _only(model, {"x": _randn(2, 5, 16)}, "rms_norm")
    graph = load_onnx(model)
    assert len(graph.nodes[0].inputs) == (1 if affine == "none" else 2)


def test_norm_over_two_trailing_axes_and_not_over_a_leading_one():
    def model(axes):
        nodes = [h.make_node("ReduceMean", ["x"], ["mu"], axes=axes),
                 h.make_node("Sub", ["x", "mu"], ["d"]), h.make_node("Mul", ["d", "d"], ["sq"]),
                 h.make_node("ReduceMean", ["sq"], ["var"], axes=axes),
                 h.make_node("Add", ["var", "eps"], ["a"]), h.make_node("Sqrt", ["a"], ["r"]),
                 h.make_node("Div", ["d", "r"], ["y"])]
        return _model(nodes, [X], [Y], _norm_inits(), opset=13)
    assert _only(model([-2, -1]), {"x": _randn(2, 5, 16)}, "layer_norm")["axis"] == -2
    assert "layer_norm" not in _against_ort(model([0]), {"x": _randn(2, 5, 16)})


def test_layer_norm_keeps_a_bias_that_is_no_constant():
    nodes = [h.make_node("LayerNormalization", ["x", "w"], ["n"]),
             h.make_node("Add", ["n", "z"], ["y"])]
    model = _model(nodes, [X, ("z", T.FLOAT, [2, 5, 16])], [Y], _norm_inits())
    assert _against_ort(model, {"x": _randn(2, 5, 16), "z": _randn(2, 5, 16)}) == [
        "layer_norm", "add"]


class _WrittenOutNorms(torch.nn.Module):
    """LayerNorm with the variance as d * d and rsqrt, Llama's RMSNorm, NewGELU's tanh form."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.ln_w, self.ln_b, self.rms_w = (torch.nn.Parameter(torch.randn(16, generator=gen))
                                            for _ in range(3))

    def forward(self, x):
        d = x - x.mean(-1, keepdim=True)
        x = d * torch.rsqrt((d * d).mean(-1, keepdim=True) + 1e-5) * self.ln_w + self.ln_b
        x = 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
        return self.rms_w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


def test_torch_written_out_norms_and_tanh_gelu():
    module = _WrittenOutNorms().eval()
    x = _randn(2, 5, 16)
    model = export_module(module, (x,), ["x"], ["y"])
    assert _against_ort(model, {"x": x}) == ["layer_norm", "gelu", "rms_norm"]
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(load_onnx(model), {"x": x})["y"], want, rtol=1e-4, atol=1e-5)


# ---- attention ----------------------------------------------------------------------------------
def _scores_nodes(k: str = "k") -> list:
    return [h.make_node("Transpose", [k], ["kt"], perm=[0, 1, 3, 2]),
            h.make_node("MatMul", ["q", "kt"], ["qk"]), h.make_node("Mul", ["qk", "c"], ["s"])]


def _attention_tail(scores: str) -> list:
    return [h.make_node("Softmax", [scores], ["p"], axis=-1),
            h.make_node("MatMul", ["p", "v"], ["y"])]


def _qkv_model(nodes, inits, tq=6, tk=6, extra_inputs=()) -> onnx.ModelProto:
    shapes = {"q": [2, 3, tq, 8], "k": [2, 3, tk, 8], "v": [2, 3, tk, 8]}
    return _model(nodes, [(n, T.FLOAT, s) for n, s in shapes.items()] + list(extra_inputs),
                  [("y", T.FLOAT, [2, 3, tq, 8])], [_init("c", np.float32(8 ** -0.5)), *inits])


def _feeds(tq=6, tk=6) -> dict:
    return {"q": _randn(2, 3, tq, 8), "k": _randn(2, 3, tk, 8), "v": _randn(2, 3, tk, 8)}


def _minus_inf() -> onnx.NodeProto:
    """-inf as a Constant node (initializers must be finite)."""
    return h.make_node("Constant", [], ["ninf"], value=_init("ninf", np.float32(-np.inf)))


def _band(tq: int, tk: int, window: int) -> np.ndarray:
    i, j = np.arange(tq)[:, None] + (tk - tq), np.arange(tk)[None, :]
    return (j <= i) & ((j > i - window) if window else True)


@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize("tq,tk", [(6, 6), (2, 6)])
@pytest.mark.parametrize("fill", ["finfo_min", "minus_1e9"])
def test_constant_band_mask_becomes_causal_window(window, tq, tk, fill):
    big = np.finfo(np.float32).min if fill == "finfo_min" else -1e9
    mask = np.where(_band(tq, tk, window), 0, big).astype(np.float32)[None, None]
    nodes = [*_scores_nodes(), h.make_node("Add", ["mask", "s"], ["sm"]), *_attention_tail("sm")]
    model = _qkv_model(nodes, [_init("mask", mask)], tq, tk)
    attrs = _only(model, _feeds(tq, tk), "attention")
    assert attrs["causal"] == 1 and attrs["window"] == window


@pytest.mark.parametrize("window", [0, 2])
def test_band_mask_built_with_where_and_minus_inf(window):
    """Where(band, 0, -inf) mixes -inf with zeros, so folding leaves it to run: the rule reads
    the band off the Where of constants."""
    nodes = [_minus_inf(), h.make_node("Where", ["band", "zero", "ninf"], ["mask"]),
             *_scores_nodes(), h.make_node("Add", ["s", "mask"], ["sm"]), *_attention_tail("sm")]
    inits = [_init("band", _band(6, 6, window)), _init("zero", np.float32(0))]
    attrs = _only(_qkv_model(nodes, inits), _feeds(), "attention")
    assert attrs["causal"] == 1 and attrs["window"] == window


def test_a_mask_that_is_no_band_stays_an_input():
    mask = np.where(np.random.default_rng(1).random((1, 1, 6, 6)) < 0.7, 0, -1e9)
    nodes = [*_scores_nodes(), h.make_node("Add", ["s", "mask"], ["sm"]), *_attention_tail("sm")]
    model = _qkv_model(nodes, [_init("mask", mask.astype(np.float32))])
    attrs = _only(model, _feeds(), "attention")
    assert "causal" not in attrs or attrs["causal"] == 0
    assert len(load_onnx(model).nodes[0].inputs) == 4


@pytest.mark.parametrize("form", ["keep", "masked_fill"])
def test_bool_mask_through_where(form):
    """Where(keep, scores, -inf) and masked_fill's Where(drop, -inf, scores) with a runtime bool
    mask: one attention reading the mask (no row fully masked, where onnxruntime gives NaN)."""
    where = (h.make_node("Where", ["m", "s", "ninf"], ["sm"]) if form == "keep"
             else h.make_node("Where", ["m", "ninf", "s"], ["sm"]))
    model = _qkv_model([_minus_inf(), *_scores_nodes(), where, *_attention_tail("sm")], [],
                       extra_inputs=[("m", T.BOOL, [2, 1, 6, 6])])
    keep = np.random.default_rng(2).random((2, 1, 6, 6)) < 0.6
    keep[..., 0] = True
    ops = _against_ort(model, {**_feeds(), "m": keep if form == "keep" else ~keep})
    assert ops == (["attention"] if form == "keep" else ["not", "attention"])


def test_where_mask_with_a_finite_fill_stays_additive():
    """With finfo.min the masked scores are finite: an additive mask keeps the model's result
    even on a fully masked row (a uniform average), so the Where stays, feeding attention."""
    nodes = [*_scores_nodes(), h.make_node("Where", ["m", "s", "low"], ["sm"]),
             *_attention_tail("sm")]
    model = _qkv_model(nodes, [_init("low", np.finfo(np.float32).min)],
                       extra_inputs=[("m", T.BOOL, [2, 1, 1, 6])])
    keep = np.random.default_rng(3).random((2, 1, 1, 6)) < 0.6
    keep[1] = False  # the second sequence has every key masked
    assert _against_ort(model, {**_feeds(), "m": keep}) == ["where", "attention"]


def test_repeat_kv_of_transposed_key_and_mask_first():
    """GQA: repeat_kv on k (moved from [B, T, Hkv, D] to heads first) and on v; the padding mask
    added before the scores."""
    nodes = [h.make_node("Transpose", ["kb"], ["kh"], perm=[0, 2, 1, 3])]
    for name, src in (("k", "kh"), ("v", "v")):
        nodes += [h.make_node("Unsqueeze", [src, "ax"], [f"{name}u"]),
                  h.make_node("Expand", [f"{name}u", "rep"], [f"{name}e"]),
                  h.make_node("Reshape", [f"{name}e", "full"], [f"{name}r"])]
    nodes += [h.make_node("Transpose", ["kr"], ["kt"], perm=[0, 1, 3, 2]),
              h.make_node("MatMul", ["q", "kt"], ["qk"]), h.make_node("Div", ["qk", "c"], ["s"]),
              h.make_node("Add", ["pad", "s"], ["sm"]),
              h.make_node("Softmax", ["sm"], ["p"], axis=-1),
              h.make_node("MatMul", ["p", "vr"], ["y"])]
    inits = [_init("ax", np.array([2])), _init("rep", np.array([1, 2, 2, 5, 8])),
             _init("full", np.array([1, 4, 5, 8])), _init("c", np.float32(math.sqrt(8)))]
    model = _model(nodes, [("q", T.FLOAT, [1, 4, 5, 8]), ("kb", T.FLOAT, [1, 5, 2, 8]),
                           ("v", T.FLOAT, [1, 2, 5, 8]), ("pad", T.FLOAT, [1, 1, 1, 5])],
                   [("y", T.FLOAT, [1, 4, 5, 8])], inits)
    pad = np.where(np.arange(5) < 4, 0, -1e4).astype(np.float32).reshape(1, 1, 1, 5)
    feeds = {"q": _randn(1, 4, 5, 8), "kb": _randn(1, 5, 2, 8), "v": _randn(1, 2, 5, 8), "pad": pad}
    assert _against_ort(model, feeds) == ["transpose", "attention"]
    attention = load_onnx(model).nodes[-1]
    assert attention.inputs[1:] == ["kh", "v", "pad"]
    assert attention.attrs["scale"] == pytest.approx(8 ** -0.5)


def test_softmax_over_axis_3():
    nodes = [*_scores_nodes(), h.make_node("Softmax", ["s"], ["p"], axis=3),
             h.make_node("MatMul", ["p", "v"], ["y"])]
    _only(_qkv_model(nodes, []), _feeds(), "attention")


def test_key_in_bshd_layout():
    """k [B, T, H, D] turned into k^T by one Transpose [0, 2, 3, 1]."""
    nodes = [h.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 3, 1]),
             h.make_node("MatMul", ["q", "kt"], ["s"]), *_attention_tail("s")]
    model = _model(nodes, [("q", T.FLOAT, [2, 3, 6, 8]), ("k", T.FLOAT, [2, 6, 3, 8]),
                           ("v", T.FLOAT, [2, 3, 6, 8])], [("y", T.FLOAT, [2, 3, 6, 8])])
    feeds = {"q": _randn(2, 3, 6, 8), "k": _randn(2, 6, 3, 8), "v": _randn(2, 3, 6, 8)}
    assert _against_ort(model, feeds) == ["transpose", "attention"]
    assert load_onnx(model).nodes[-1].attrs["scale"] == 1.0


# ---- provenance and the fused domain ------------------------------------------------------------
def test_support_table_names_every_source_of_a_fused_node():
    nodes = [_mean("x", "mu", 18), h.make_node("Sub", ["x", "mu"], ["d"]),
             _square("mul", "d", "sq"), _mean("sq", "var", 18),
             h.make_node("Add", ["var", "eps"], ["a"]), h.make_node("Sqrt", ["a"], ["r"]),
             *_divide("div", "d", "r", "n"), *_affine("scale bias", "n")]
    rows = support_table(_model(nodes, [X], [Y], _norm_inits()))
    assert len(rows) == 9 and all(r["status"] == "supported" and r["ir_ops"] == ["layer_norm"]
                                  for r in rows)


def test_a_model_may_not_use_the_fused_domain():
    node = h.make_node("Silu", ["x"], ["y"], domain=FUSED_DOMAIN)
    model = _model([node], [X], [Y], domains=[(FUSED_DOMAIN, 1)])
    with pytest.raises(UnsupportedError, match=f"domain {FUSED_DOMAIN} is internal"):
        load_onnx(model)


# ---- linear, batch norm, no-op nodes ------------------------------------------------------------
def test_batch_norm_folds_into_a_2d_matmul():
    nodes = [h.make_node("MatMul", ["x", "w"], ["t"]),
             h.make_node("BatchNormalization", ["t", "s", "b", "m", "v"], ["y"], epsilon=1e-3)]
    inits = [_init("w", _randn(8, 4)), _init("s", 1 + 0.2 * _randn(4)), _init("b", _randn(4)),
             _init("m", 0.3 * _randn(4)), _init("v", 0.5 + np.abs(_randn(4)))]
    model = _model(nodes, [("x", T.FLOAT, [3, 8])], [("y", T.FLOAT, [3, 4])], inits)
    _only(model, {"x": _randn(3, 8)}, "linear")


def test_matmul_by_a_weight_that_is_no_constant_stays_a_matmul():
    model = _model([h.make_node("MatMul", ["x", "w"], ["y"])],
                   [("x", T.FLOAT, [3, 8]), ("w", T.FLOAT, [8, 4])], [("y", T.FLOAT, [3, 4])])
    assert _against_ort(model, {"x": _randn(3, 8), "w": _randn(8, 4)}) == ["matmul"]


def test_identity_dropout_and_other_no_ops_vanish():
    nodes = [h.make_node("Identity", ["x"], ["a"]), h.make_node("Dropout", ["a", "ratio"], ["b"]),
             h.make_node("Cast", ["b"], ["c"], to=T.FLOAT), h.make_node("Sum", ["c"], ["d"]),
             h.make_node("ReduceSum", ["d"], ["e"], noop_with_empty_axes=1),
             h.make_node("Relu", ["e"], ["y"])]
    model = _model(nodes, [X], [Y], [_init("ratio", np.float32(0.3))])
    rows = support_table(model)
    assert _only(model, {"x": _randn(2, 5, 16)}, "relu") == {}
    assert [r["ir_ops"] for r in rows] == [[]] * 5 + [["relu"]]


def test_dropout_in_training_mode_is_refused():
    node = h.make_node("Dropout", ["x", "ratio", "train"], ["y"])
    model = _model([node], [X], [Y], [_init("ratio", np.float32(0.3)), _init("train", True)])
    with pytest.raises(UnsupportedError, match="training mode"):
        load_onnx(model)


def test_weights_shared_by_several_layers():
    """One norm weight and one MatMul weight serve two layers each (exporters deduplicate equal
    initializers): every layer fuses, each with its own derived constants."""
    nodes = []
    for i, src in enumerate(["x", "h1"]):
        nodes += [_square("pow", src, f"sq{i}"), _mean(f"sq{i}", f"ms{i}", 18),
                  h.make_node("Add", [f"ms{i}", "eps"], [f"a{i}"]),
                  h.make_node("Sqrt", [f"a{i}"], [f"r{i}"]),
                  h.make_node("Div", [src, f"r{i}"], [f"n{i}"]),
                  h.make_node("Mul", [f"n{i}", "w"], [f"s{i}"]),
                  h.make_node("MatMul", [f"s{i}", "m"], ["h1" if i == 0 else "y"])]
    model = _model(nodes, [X], [Y], [*_norm_inits(), _init("m", _randn(16, 16))])
    assert _against_ort(model, {"x": _randn(2, 5, 16)}) == ["rms_norm", "linear"] * 2
