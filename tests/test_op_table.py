"""The op table owns what follows from an op: docs/OPS.md is generated from it, every op has a
shape rule and a reference kernel, the ONNX frontend and exporter read its names, and its derived
rules (count limit, threshold shape, attention band, output shapes) hold."""
from pathlib import Path

import numpy as np
import pytest

from sbcompile.backends.export_onnx_ops import EMITTERS
from sbcompile.errors import GraphError
from sbcompile.frontends.onnx_converters import converter_for
from sbcompile.ir.graph import Graph, Node, Value
from sbcompile.ir.ops import (OPS, GroupOp, attention_keep, count_limit, dynamic_count_bound,
                              dynamic_sum_bound, markdown_table, node_attrs, output_dtypes,
                              threshold_shape)
from sbcompile.ir.shapes import RULES, infer
from sbcompile.ir.validate import validate
from sbcompile.runtime.reference import KERNELS, evaluate

ROOT = Path(__file__).resolve().parents[1]


def test_ops_md_is_generated_from_the_table():
    assert (ROOT / "docs" / "OPS.md").read_text() == markdown_table(), \
        "docs/OPS.md is stale: python -m sbcompile.ir.ops > docs/OPS.md"


def test_every_op_has_a_shape_rule_and_a_reference_kernel():
    assert set(RULES) == set(OPS)
    assert set(KERNELS) == set(OPS)


def test_frontend_and_exporter_read_the_onnx_names_of_the_table():
    named = [s for s in OPS.values() if s.onnx]
    assert len(named) > 50
    for spec in named:
        assert converter_for("", spec.onnx) is not None, spec.onnx
        assert spec.name in EMITTERS, spec.name


def test_count_limit():
    base = node_attrs(Node("e", "spike_encode", ["x"], ["c", "v"]))
    assert count_limit(base) == 2 ** 20
    assert count_limit({**base, "max_count": 7}) == 7
    assert count_limit({**base, "max_count": 2 ** 30}) == 2 ** 20


def test_threshold_shape():
    assert threshold_shape((2, 5, 8), "token") == (2, 5, 1)
    assert threshold_shape(("batch", 3, 4, 4), "sample") == ("batch", 1, 1, 1)
    with pytest.raises(ValueError):
        threshold_shape((2, 3), "channel")


@pytest.mark.parametrize("tq,tk,causal,window", [(4, 4, 1, 0), (3, 7, 1, 0), (5, 5, 1, 2),
                                                 (2, 6, 1, 3), (4, 4, 0, 0)])
def test_attention_keep_is_the_bottom_right_band(tq, tk, causal, window):
    keep = attention_keep(tq, tk, causal, window)
    for i in range(tq):
        for j in range(tk):
            pos = i + tk - tq
            want = (not causal or j <= pos) and (window == 0 or j > pos - window)
            assert keep[i, j] == want


def _graph(nodes, inputs, params, out_shapes):
    values = {k: Value(k, tuple(v.shape), v.dtype.name) for k, v in {**inputs, **params}.items()}
    for name, (shape, dtype) in out_shapes.items():
        values[name] = Value(name, shape, dtype)
    return Graph("g", list(inputs), [nodes[-1].outputs[0]], values, nodes, dict(params))


def test_shape_rules_follow_the_kernels_through_shape_arithmetic():
    """shape -> gather -> concat -> reshape: the rules (with values followed) give the shapes the
    reference kernels produce, for a batch the graph leaves symbolic."""
    x = np.random.default_rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    params = {"idx": np.array([0], np.int64), "tail": np.array([2, 12], np.int64)}
    nodes = [Node("s", "shape", ["x"], ["s_out"]), Node("g", "gather", ["s_out", "idx"], ["b"]),
             Node("c", "concat", ["b", "tail"], ["target"], {"axis": 0}),
             Node("r", "reshape", ["x", "target"], ["y"]),
             Node("t", "transpose", ["y"], ["z"], {"perm": [0, 2, 1]})]
    graph = _graph(nodes, {"x": x}, params, {
        "s_out": ((3,), "int64"), "b": ((1,), "int64"), "target": ((3,), "int64"),
        "y": (("batch", 2, 12), "float32"), "z": (("batch", 12, 2), "float32")})
    graph.values["x"] = Value("x", ("batch", 4, 6), "float32")
    validate(graph)
    shapes = infer(graph, {"x": x.shape},
                   evaluate=lambda node, args: KERNELS[node.op](node_attrs(node), *args))
    env = evaluate(graph, {"x": x}, keep=["y", "z"])
    assert shapes["y"] == env["y"].shape and shapes["z"] == env["z"].shape


def test_validate_compares_declared_shapes_with_the_rules():
    x = np.zeros((2, 8), np.float32)
    params = {"w": np.zeros((4, 8), np.float32)}
    node = Node("fc", "linear", ["x", "w"], ["y"])
    validate(_graph([node], {"x": x}, params, {"y": ((2, 4), "float32")}))
    with pytest.raises(GraphError, match="node 'fc' \\(linear\\): output 'y' is declared"):
        validate(_graph([node], {"x": x}, params, {"y": ((2, 5), "float32")}))
    with pytest.raises(GraphError, match="node 'fc' \\(linear\\): input has 7 features"):
        validate(_graph([node], {"x": np.zeros((2, 7), np.float32)}, params,
                        {"y": ((2, 4), "float32")}))


def test_use_lists_name_every_slot_and_follow_edits():
    """mul(d, d) reads d in both slots; consumers() lists the node once; replace_uses edits
    every slot and the use-lists follow."""
    d = np.zeros((2, 3), np.float32)
    graph = _graph([Node("sq", "mul", ["d", "d"], ["y"])], {"d": d}, {},
                   {"y": ((2, 3), "float32")})
    sq = graph.nodes[0]
    assert [(n.name, slot) for n, slot in graph.uses()["d"]] == [("sq", 0), ("sq", 1)]
    assert graph.consumers()["d"] == [sq]
    e, = graph.add_node("neg", ["d"], ["e"], "negate", at=0)
    graph.replace_uses("d", e, only=[sq])
    assert sq.inputs == [e, e]
    assert [(n.name, slot) for n, slot in graph.uses()[e]] == [("sq", 0), ("sq", 1)]
    assert [n.name for n, _ in graph.uses()["d"]] == ["negate"]
    validate(graph)


@pytest.mark.parametrize("op,inputs,attrs", [
    ("argmax", {"x": np.array([[3.0, 1.0, 3.0], [0.0, 2.0, -1.0]], np.float32)}, {"axis": 1}),
    ("argmin", {"x": np.array([[3.0, 1.0, 3.0], [0.0, 2.0, -1.0]], np.float32)}, {"axis": 1}),
    ("topk", {"x": np.array([[3.0, 1.0, 3.0], [0.0, 2.0, -1.0]], np.float32),
              "k": np.array([2], np.int64)}, {}),
    ("equal", {"a": np.array([1, 2], np.int32), "b": np.array([1, 3], np.int32)}, {}),
    ("not", {"x": np.array([True, False])}, {}),
    ("where", {"c": np.array([True, False]), "a": np.array([1, 2], np.int64),
               "b": np.array([3, 4], np.int64)}, {}),
    ("cast", {"x": np.array([1.5, -2.5], np.float32)}, {"to": "int32"}),
    ("shape", {"x": np.zeros((2, 3), np.float32)}, {})])
def test_output_dtypes_are_what_the_kernels_compute(op, inputs, attrs):
    """The op table's dtype rule (what Graph.add_node declares and validate checks) is the
    dtype the reference kernel computes: argmin's and topk's indices are int64."""
    params = {k: v for k, v in inputs.items() if k == "k"}
    feeds = {k: v for k, v in inputs.items() if k != "k"}
    values = {k: Value(k, v.shape, v.dtype.name) for k, v in inputs.items()}
    graph = Graph("g", list(feeds), [], values, [], params)
    outs = graph.add_node(op, list(inputs), ["y"] if op != "topk" else ["v", "i"], "n", **attrs)
    graph.outputs = outs
    validate(graph)
    env = evaluate(graph, feeds)
    assert [env[o].dtype.name for o in outs] == [graph.values[o].dtype for o in outs]
    declared = [graph.values[o].dtype for o in outs]
    assert declared == output_dtypes(graph.nodes[0], [v.dtype for v in values.values()])


def test_validate_compares_declared_dtypes_with_the_rules():
    x = np.zeros((2, 3), np.float32)
    node = Node("am", "argmin", ["x"], ["y"], {"axis": 1})
    validate(_graph([node], {"x": x}, {}, {"y": ((2, 1), "int64")}))
    with pytest.raises(GraphError, match="output 'y' is declared float32 but its op gives int64"):
        validate(_graph([node], {"x": x}, {}, {"y": ((2, 1), "float32")}))


def test_groups_cover_the_ops_they_name():
    assert GroupOp.Bool == {"equal", "less", "greater", "and", "or", "not"}
    assert GroupOp.Index == {"shape", "argmax", "argmin"}
    assert GroupOp.Integer <= GroupOp.Spike <= GroupOp.All == set(OPS)
    assert not GroupOp.Broadcast & GroupOp.SameShape


def test_dynamic_count_bounds_hold_on_the_reference():
    """A dynamic encoder over n values never emits |count| above ceil(k n) + 1, nor a sum of
    |counts| per row above (k + 1/2) n, even on one spike of a row of zeros."""
    rng = np.random.default_rng(1)
    for k, n in ((3.0, 16), (0.5, 7), (8.0, 64)):
        attrs = {**OPS["spike_encode"].attrs, "k": k}
        x = rng.standard_normal((200, n)).astype(np.float32) ** 3
        x[0] = 0
        x[0, 0] = 5.0
        graph = Graph("g", ["x"], [], {"x": Value("x", x.shape, "float32")}, [], {})
        counts, _ = graph.add_node("spike_encode", ["x"], ["c", "v"], "e", k=k)
        graph.outputs = [counts]
        got = np.abs(evaluate(graph, {"x": x})[counts].astype(np.int64))
        assert got.max() <= dynamic_count_bound(attrs, n)
        assert got.sum(axis=1).max() <= dynamic_sum_bound(attrs, n)
