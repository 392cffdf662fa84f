"""If, Loop and Scan of static structure inline before lowering and run to onnxruntime's numbers;
an If on a run-time condition runs both branches and selects; the forms that cannot (a Loop's
run-time trip count) are refused with the reason, naming the node."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from sbcompile.errors import UnsupportedError
from sbcompile.frontends.onnx_frontend import load_onnx, support_table

sys.path.insert(0, str(Path(__file__).parent))
from test_onnx_real_ops import _model, _randn, check  # noqa: E402


def _graph(nodes, inputs, outputs, inits=()):
    return h.make_graph(nodes, "body", [h.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                        [h.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])


def _branches():
    """then: relu(x) * 2; else: x - 1 (both read x from the enclosing graph)."""
    then = _graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("Mul", ["r", "two"], ["out"])],
                  [], [("out", T.FLOAT, [3, 4])], {"two": np.float32(2)})
    other = _graph([h.make_node("Sub", ["x", "one"], ["out"])], [], [("out", T.FLOAT, [3, 4])],
                   {"one": np.float32(1)})
    return then, other


@pytest.mark.parametrize("cond", [True, False])
def test_if_with_a_constant_condition_inlines_the_branch_taken(cond):
    then, other = _branches()
    model = _model([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                   [("x", T.FLOAT, [3, 4])], [("y", T.FLOAT, [3, 4])], {"c": np.array(cond)})
    ops = set(check(model, {"x": _randn(3, 4)}))
    assert (ops >= {"mul", "relu"} and "sub" not in ops) if cond else \
        ("sub" in ops and "relu" not in ops)


def test_if_on_a_shape_folds_and_inlines():
    """The condition is rank(x) == 2 computed with Shape / Size / Equal: static shapes fold it."""
    then, other = _branches()
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("Size", ["s"], ["rank"]),
             h.make_node("Equal", ["rank", "two_i"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other, name="is_2d")]
    model = _model(nodes, [("x", T.FLOAT, [3, 4])], [("y", T.FLOAT, [3, 4])],
                   {"two_i": np.array(2, np.int64)})
    assert {"mul", "relu"} <= set(check(model, {"x": _randn(3, 4)}))
    names = {r["name"]: r for r in support_table(model)}
    assert all(r["status"] == "supported" for r in names.values())
    assert any(name.startswith("is_2d/") for name in names)


@pytest.mark.parametrize("cond", [True, False])
def test_if_on_a_runtime_value_selects_between_both_branches(cond):
    then, other = _branches()
    model = _model([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other,
                                name="gate")],
                   [("x", T.FLOAT, [3, 4]), ("c", T.BOOL, [])], [("y", T.FLOAT, [3, 4])])
    assert {"mul", "relu", "sub", "where"} <= set(check(model, {"x": _randn(3, 4),
                                                              "c": np.array(cond)}))


def _loop_body():
    """acc <- acc * 0.5 + x * i; scan output: acc + 1."""
    return _graph([h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
                   h.make_node("Mul", ["x", "fi"], ["xi"]),
                   h.make_node("Mul", ["acc_in", "half"], ["decayed"]),
                   h.make_node("Add", ["decayed", "xi"], ["acc_out"]),
                   h.make_node("Add", ["acc_out", "one"], ["seen"]),
                   h.make_node("Identity", ["cond_in"], ["cond_out"])],
                  [("i", T.INT64, []), ("cond_in", T.BOOL, []), ("acc_in", T.FLOAT, [2, 3])],
                  [("cond_out", T.BOOL, []), ("acc_out", T.FLOAT, [2, 3]),
                   ("seen", T.FLOAT, [2, 3])], {"half": np.float32(0.5), "one": np.float32(1)})


def test_loop_with_a_constant_trip_count_unrolls():
    model = _model([h.make_node("Loop", ["trips", "", "acc0"], ["acc", "history"],
                                body=_loop_body())],
                   [("x", T.FLOAT, [2, 3]), ("acc0", T.FLOAT, [2, 3])],
                   [("acc", T.FLOAT, [2, 3]), ("history", T.FLOAT, [4, 2, 3])],
                   {"trips": np.array(4, np.int64)})
    ops = check(model, {"x": _randn(2, 3), "acc0": _randn(2, 3)})
    assert "add" in ops and "concat" in ops


def test_loop_with_a_runtime_trip_count_is_refused():
    model = _model([h.make_node("Loop", ["trips", "", "acc0"], ["acc", "history"],
                                body=_loop_body(), name="repeat")],
                   [("x", T.FLOAT, [2, 3]), ("acc0", T.FLOAT, [2, 3]), ("trips", T.INT64, [])],
                   [("acc", T.FLOAT, [2, 3]), ("history", T.FLOAT, ["n", 2, 3])])
    with pytest.raises(UnsupportedError, match="'repeat' \\(Loop\\): the trip count"):
        load_onnx(model)


@pytest.mark.parametrize("direction,out_axis", [(0, 0), (1, 1)])
def test_scan_unrolls_over_a_static_length(direction, out_axis):
    """Running sum and product over the rows of x (forward or reverse), each step's sum
    stacked along out_axis."""
    body = _graph([h.make_node("Add", ["s_in", "row"], ["s_out"]),
                   h.make_node("Mul", ["p_in", "row"], ["p_out"]),
                   h.make_node("Identity", ["s_out"], ["step"])],
                  [("s_in", T.FLOAT, [4]), ("p_in", T.FLOAT, [4]), ("row", T.FLOAT, [4])],
                  [("s_out", T.FLOAT, [4]), ("p_out", T.FLOAT, [4]), ("step", T.FLOAT, [4])])
    node = h.make_node("Scan", ["s0", "p0", "x"], ["s", "p", "steps"], body=body,
                       num_scan_inputs=1, scan_input_directions=[direction],
                       scan_output_axes=[out_axis])
    steps_shape = [5, 4] if out_axis == 0 else [4, 5]
    model = _model([node], [("s0", T.FLOAT, [4]), ("p0", T.FLOAT, [4]), ("x", T.FLOAT, [5, 4])],
                   [("s", T.FLOAT, [4]), ("p", T.FLOAT, [4]), ("steps", T.FLOAT, steps_shape)])
    check(model, {"s0": _randn(4), "p0": _randn(4), "x": _randn(5, 4)})


def test_nested_if_inside_a_loop_body():
    """An If on the iteration number inside a Loop: each unrolled iteration folds its own."""
    then = _graph([h.make_node("Add", ["acc_in", "x"], ["v"])], [], [("v", T.FLOAT, [2, 3])])
    other = _graph([h.make_node("Sub", ["acc_in", "x"], ["v"])], [], [("v", T.FLOAT, [2, 3])])
    body = _graph([h.make_node("Less", ["i", "two"], ["early"]),
                   h.make_node("If", ["early"], ["acc_out"], then_branch=then, else_branch=other),
                   h.make_node("Identity", ["cond_in"], ["cond_out"])],
                  [("i", T.INT64, []), ("cond_in", T.BOOL, []), ("acc_in", T.FLOAT, [2, 3])],
                  [("cond_out", T.BOOL, []), ("acc_out", T.FLOAT, [2, 3])],
                  {"two": np.array(2, np.int64)})
    model = _model([h.make_node("Loop", ["trips", "", "acc0"], ["acc"], body=body)],
                   [("x", T.FLOAT, [2, 3]), ("acc0", T.FLOAT, [2, 3])], [("acc", T.FLOAT, [2, 3])],
                   {"trips": np.array(5, np.int64)})
    ops = [n.op for n in load_onnx(model).nodes]
    assert ops.count("add") == 2 and ops.count("sub") == 3  # iterations 0, 1 add; 2..4 subtract
    check(model, {"x": _randn(2, 3), "acc0": _randn(2, 3)})
