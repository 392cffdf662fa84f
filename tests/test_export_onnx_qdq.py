"""onnx-qdq export: onnxruntime runs the exported spiking graph to the reference's outputs
(1e-5 relative) and to its integer counts and accumulators exactly (added outputs)."""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sbcompile.backends.export import export
from sbcompile.backends.export_onnx_qdq import inexpressible, to_onnx
from sbcompile.demo import EXAMPLE
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node, Value
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).parent))
from models import build_cnn, build_mlp  # noqa: E402

PRESETS = ["spikingbrain", "loihi2", "ternary"]


def _digits():
    held = load_npz(EXAMPLE / "heldout.npz")
    return EXAMPLE / "model.onnx", load_npz(EXAMPLE / "calib.npz"), {"image": held["image"][:64]}


def _zoo(build):
    zoo = build()
    return zoo.onnx_bytes(), zoo.inputs, zoo.eval_inputs


SOURCES = {"mlp": lambda: _zoo(build_mlp), "cnn": lambda: _zoo(build_cnn), "digits": _digits}


def _ort(model: onnx.ModelProto, feeds: dict) -> dict:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _integer_values(graph: Graph) -> list[str]:
    return [v for info in graph.meta["layers"].values() for v in (info["counts"], info["acc"])]


@pytest.mark.parametrize("source", SOURCES)
def test_onnxruntime_matches_reference(source, tmp_path):
    model, calib, feeds = SOURCES[source]()
    for preset in PRESETS:
        art = compile_model(model, preset, calib=calib)
        keep = _integer_values(art.graph)
        want = reference.evaluate(art.graph, feeds, keep=keep)
        got = _ort(to_onnx(art.graph, keep), feeds)
        for name in keep:
            assert got[name].dtype == np.int32
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{preset} {name}")
        assert np.abs(np.concatenate([want[c].ravel() for c in keep[::2]])).max() > 0
        # the file export() writes (no added outputs) runs to the same outputs
        path = tmp_path / f"{source}-{preset}.onnx"
        assert export(art, "onnx-qdq", path)["left_out"] == []
        from_file = _ort(onnx.load(path), feeds)
        for name in art.graph.outputs:
            for result in (got, from_file):
                np.testing.assert_allclose(result[name], want[name], rtol=1e-5,
                                           atol=1e-6 * np.abs(want[name]).max(),
                                           err_msg=f"{preset} {name}")
        ops = {n.op_type for n in onnx.load(path).graph.node}
        if preset != "spikingbrain":
            assert "QuantizeLinear" in ops
        else:
            assert "Round" in ops and "ReduceMean" not in ops  # the mean in numpy's order


def test_weight_groups_sum_in_the_reference_order():
    """group_size 8: per-group scales, the groups' products summed in order."""
    model, calib, feeds = _zoo(build_mlp)
    art = compile_model(model, "spikingbrain", calib=calib, overrides={"group_size": "8"})
    assert {n.attrs.get("group_size") for n in art.graph.nodes if n.op == "spike_linear"} == {8}
    keep = _integer_values(art.graph)
    want = reference.evaluate(art.graph, feeds, keep=keep)
    got = _ort(to_onnx(art.graph, keep), feeds)
    for name in keep:
        np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5,
                               atol=1e-6 * np.abs(want["logits"]).max())


@pytest.mark.parametrize("build", ["bert", "decoder"])
def test_spiked_attention_exports_exactly(build):
    """Preset spikingbrain's integer attention (spike_scores, spike_attention) in the export:
    the scores and every count equal the reference's, the outputs agree."""
    import models
    from sbcompile.runtime.targets import integer_values

    zoo = getattr(models, f"build_{build}")()
    art = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs)
    keep = integer_values(art.graph)
    scores = [n.outputs[0] for n in art.graph.nodes if n.op == "spike_scores"]
    assert scores and set(scores) <= set(keep)
    want = reference.evaluate(art.graph, zoo.eval_inputs, keep=keep)
    got = _ort(to_onnx(art.graph, keep), zoo.eval_inputs)
    for name in keep:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for name in art.graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5,
                                   atol=1e-5 * np.abs(want[name]).max(), err_msg=name)


def _one_node_graph(op: str, inputs: dict, outputs: dict, **attrs) -> Graph:
    """A graph of one IR node; ``inputs``/``outputs`` map names to (shape, dtype)."""
    values = {n: Value(n, shape, dtype) for n, (shape, dtype) in {**inputs, **outputs}.items()}
    return Graph(op, list(inputs), list(outputs), values,
                 [Node(op, op, list(inputs), list(outputs), attrs)])


@pytest.mark.parametrize("op,inputs,outputs,attrs", [
    ("attention", {"q": ((1, 4, 5, 8), "float32"), "k": ((1, 2, 7, 8), "float32"),
                   "v": ((1, 2, 7, 8), "float32"), "mask": ((7,), "float32")},
     {"y": ((1, 4, 5, 8), "float32")}, {"causal": 1, "window": 3}),
    ("attention", {"q": ((2, 2, 6, 4), "float32"), "k": ((2, 2, 6, 4), "float32"),
                   "v": ((2, 2, 6, 4), "float32"), "mask": ((2, 1, 6, 6), "bool")},
     {"y": ((2, 2, 6, 4), "float32")}, {"scale": 0.3}),
    ("mod", {"a": ((3, 4), "float32"), "b": ((3, 4), "float32")}, {"y": ((3, 4), "float32")},
     {}),
    ("rms_norm", {"x": ((3, 4, 6), "float32")}, {"y": ((3, 4, 6), "float32")}, {"axis": -2}),
    ("reduce_sum", {"x": ((3, 4), "float32")}, {"y": ((1, 1), "float32")}, {}),
    ("split", {"x": ((7, 2), "float32")}, {"y0": ((4, 2), "float32"), "y1": ((3, 2), "float32")},
     {"num_outputs": 2}),
    ("silu", {"x": ((3, 4), "float32")}, {"y": ((3, 4), "float32")}, {}),
], ids=["gqa-causal-window-mask", "bool-mask", "mod", "rms-norm", "reduce-all", "split", "silu"])
def test_float_ops_map_back(op, inputs, outputs, attrs):
    """IR ops whose ONNX form is more than a rename, against the reference."""
    rng = np.random.default_rng(1)
    graph = _one_node_graph(op, inputs, outputs, **attrs)
    feeds = {n: (rng.standard_normal(s).astype(np.float32) * 3 if d == "float32"
                 else rng.random(s) > 0.3) for n, (s, d) in inputs.items()}
    if op == "mod":
        feeds["b"][0] = [-2.0, 2.0, 0.5, -0.5]  # both signs of divisor and remainder
    want = reference.run(graph, feeds)
    got = _ort(to_onnx(graph), feeds)
    for name in outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def _encode_graph(policy: str, max_count, x_shape=(2, 8), k=3.0, vth=0.25) -> Graph:
    """x -> spike_encode -> counts, and their reconstruction."""
    values = {"x": Value("x", x_shape, "float32"), "counts": Value("counts", x_shape, "int32"),
              "y": Value("y", x_shape, "float32")}
    inputs = ["x"]
    params = {}
    if policy == "static":
        params["thr"] = np.float32(vth)
        values["thr"] = Value("thr", (), "float32")
        values["vth"] = Value("vth", (), "float32")
        inputs.append("thr")
    else:
        values["vth"] = Value("vth", x_shape[:-1] + (1,), "float32")
    attrs = {"policy": policy, "max_count": max_count, "k": k, "granularity": "token"}
    nodes = [Node("enc", "spike_encode", inputs, ["counts", "vth"], attrs),
             Node("dec", "spike_decode", ["counts", "vth"], ["y"], {"layout": "counts"})]
    return Graph("enc", ["x"], ["y", "counts"], values, nodes, params)


@pytest.mark.parametrize("policy,max_count", [("static", 1), ("static", 127), ("static", 300),
                                              ("static", 40000), ("dynamic", None)])
def test_rounding_is_half_to_even_and_clipped(policy, max_count):
    """Exact halves (x = (n + 1/2) vth with vth a power of two) round to even in both paths."""
    halves = (np.arange(-8, 8, dtype=np.float32) + 0.5) * 0.25
    x = np.stack([halves, halves[::-1] * 3])
    if policy == "dynamic":  # vth = mean|x| / k: choose k to make it 0.25 on both rows
        x = np.stack([halves, halves])
    k = float(np.abs(halves).mean() / 0.25)
    graph = _encode_graph(policy, max_count, x.shape, k=k)
    want = reference.run(graph, {"x": x})
    got = _ort(to_onnx(graph), {"x": x})
    np.testing.assert_array_equal(got["counts"], want["counts"])
    np.testing.assert_array_equal(got["y"], want["y"])
    counts = want["counts"]
    assert np.all((counts % 2 == 0) | (np.abs(counts) == max_count)) and counts.any()


def _product_graph(max_count, weight):
    graph = _encode_graph("static", max_count)
    graph.values["w"] = Value("w", weight.shape, "int8")
    graph.params["w"] = weight
    graph.values["acc"] = Value("acc", (2, 1, weight.shape[0]), "int32")
    graph.nodes.append(Node("prod", "spike_linear", ["counts", "w"], ["acc"], {}))
    graph.outputs.append("acc")
    return graph


def test_sums_beyond_exact_float32_are_split_or_refused():
    """int16 counts up to 30000 times eight weights of 127 pass 2^24: the export sums them in
    exact chunks (int32 between them); a single count of 200000 times 127 cannot be split and is
    refused, naming the node."""
    graph = _product_graph(30000, np.full((4, 8), 127, np.int8))
    x = np.full((2, 8), 30000 * 0.25, np.float32)
    x[1] *= -1
    want = reference.run(graph, {"x": x})
    assert np.abs(want["acc"]).max() == 30000 * 127 * 8 > 2 ** 24
    np.testing.assert_array_equal(_ort(to_onnx(graph), {"x": x})["acc"], want["acc"])
    problems = inexpressible(_product_graph(200000, np.full((4, 8), 127, np.int8)))
    assert [name for name, _ in problems] == ["prod"]
    assert "2^24" in problems[0][1]


def test_inexpressible_nodes_are_listed_or_cut(tmp_path):
    """A gla node has no standard ONNX form: the export names it; allow_partial keeps the
    prefix before it."""
    from sbcompile.artifact import Artifact
    shape = (1, 3, 2, 4)
    values = {n: Value(n, shape, "float32") for n in ("q", "k", "v", "g", "rq", "y")}
    nodes = [Node("act", "relu", ["q"], ["rq"]), Node("mix", "gla", ["rq", "k", "v", "g"], ["y"])]
    art = Artifact(Graph("g", ["q", "k", "v", "g"], ["y"], values, nodes), {})
    with pytest.raises(SbcError, match=r"onnx-qdq cannot hold 1 node\(s\): node 'mix' \(gla\)"):
        export(art, "onnx-qdq", tmp_path / "full.onnx")
    assert not (tmp_path / "full.onnx").exists()
    result = export(art, "onnx-qdq", tmp_path / "part.onnx", allow_partial=True)
    assert result["left_out"] == ["mix"]
    model = onnx.load(tmp_path / "part.onnx")
    assert [o.name for o in model.graph.output] == ["rq"]
    q = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(_ort(model, {"q": q})["rq"], np.maximum(q, 0))
    with pytest.raises(SbcError, match="unknown export format 'tflite'"):
        export(art, "tflite", tmp_path / "x")
