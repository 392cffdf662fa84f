"""Inputs as models define them (the `.npz` contract): batch axes from the model's symbolic dims
(a state [layers, batch, hidden] batches on axis 1), inputs without a batch axis given once,
one-line errors naming the input; duplicate node names made unique on import."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from sbcompile.batch_axes import batch_axes
from sbcompile.errors import SbcError
from sbcompile.frontends.onnx_frontend import load_onnx, support_table
from sbcompile.pipeline import compile_model
from sbcompile.runtime.reference import run

RNG = np.random.default_rng(22)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _stateful(names=("fc", "relu", "out")) -> onnx.ModelProto:
    """x[batch, 8], state[2, batch, 4], sr[] (int64) -> y[batch, 3]: a linear layer of x plus
    the summed state, scaled by the sample rate / 16000 (the shape of a VAD's inputs)."""
    rng = np.random.default_rng(0)
    nodes = [h.make_node("MatMul", ["x", "w"], ["a"], name=names[0]),
             h.make_node("ReduceSum", ["state", "axis0"], ["s"], name="sum_state", keepdims=0),
             h.make_node("Concat", ["a", "s"], ["cat"], name="concat", axis=1),
             h.make_node("Relu", ["cat"], ["r"], name=names[1]),
             h.make_node("Cast", ["sr"], ["srf"], name="cast", to=T.FLOAT),
             h.make_node("Div", ["srf", "k"], ["g"], name="gain"),
             h.make_node("MatMul", ["r", "w2"], ["m"], name=names[2]),
             h.make_node("Mul", ["m", "g"], ["y"], name="scale")]
    graph = h.make_graph(
        nodes, "stateful",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 8]),
         h.make_tensor_value_info("state", T.FLOAT, [2, "batch", 4]),
         h.make_tensor_value_info("sr", T.INT64, [])],
        [h.make_tensor_value_info("y", T.FLOAT, ["batch", 3])],
        [_init("w", rng.standard_normal((8, 6)).astype(np.float32)),
         _init("w2", rng.standard_normal((10, 3)).astype(np.float32)),
         _init("axis0", np.array([0], np.int64)), _init("k", np.float32(16000))])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def _data(n):
    return {"x": RNG.standard_normal((n, 8)).astype(np.float32),
            "state": RNG.standard_normal((2, n, 4)).astype(np.float32),
            "sr": np.array(16000, np.int64)}


def test_batch_axes_follow_the_symbolic_dims():
    assert batch_axes(load_onnx(_stateful())) == {"x": 0, "state": 1, "sr": None}


def test_state_on_axis_1_and_a_scalar_given_once_calibrate():
    """The file holds 12 samples (x on axis 0, state on axis 1) and sr once; calibrated in
    batches of 5 the thresholds equal those of the same samples given as explicit feeds."""
    model, data = _stateful(), _data(12)
    overrides = {"calib_batch": "5", "targets": ""}
    art = compile_model(model, "loihi2", calib=data, overrides=overrides)
    feeds = [{"x": data["x"][i:i + 5], "state": data["state"][:, i:i + 5], "sr": data["sr"]}
             for i in range(0, 12, 5)]
    ref = compile_model(model, "loihi2", calib=feeds, overrides=overrides)
    for name, layer in ref.graph.meta["layers"].items():
        vth = f"{name}.vth"
        assert art.graph.params[vth] == pytest.approx(ref.graph.params[vth])
    assert art.report["outputs_fidelity"]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(run(art.float_graph, data)["y"], session.run(None, data)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (lambda d: {**d, "state": d["state"][:, :7]},
     "calibration input 'state' holds 7 samples on its batch axis 1, 'x' holds 12 on axis 0"),
    (lambda d: {**d, "sr": np.full(12, 16000, np.int64)},
     "calibration input 'sr' has shape [12]; the model declares [] with no batch axis"),
    (lambda d: {**d, "state": d["state"][0]},
     "calibration input 'state' has shape [12, 4]; the model declares [2, 'batch', 4]"),
    (lambda d: {k: v for k, v in d.items() if k != "sr"}, "input 'sr' is missing"),
])
def test_a_file_that_cannot_be_matched_is_one_line_naming_the_input(bad, message):
    with pytest.raises(SbcError) as e:
        compile_model(_stateful(), "loihi2", calib=bad(_data(12)), overrides={"targets": ""})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_duplicate_and_empty_node_names_are_made_unique():
    """One exporter writes the same name on several nodes ('F0::anon'): such a file lowers, the
    support table keeps the file's name beside the unique one, and the outputs are those
    onnxruntime gives on the same model with the names told apart (it refuses the file as is)."""
    model = _stateful(names=("F0::anon", "F0::anon", ""))
    rows = support_table(model)
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names)
    assert [r.get("onnx_name") for r in rows if r["op_type"] in ("MatMul", "Relu")] == \
        [None, "F0::anon", None]
    data = _data(4)
    session = ort.InferenceSession(_stateful().SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(run(load_onnx(model), data)["y"], session.run(None, data)[0],
                               rtol=1e-5, atol=1e-5)


def test_cli_compiles_and_runs_a_file_with_a_state_and_a_scalar(tmp_path):
    """The `.npz` contract end to end: the state on its batch axis, the sample rate once; the
    onnxruntime target runs the whole file as one batch and agrees with the reference."""
    from click.testing import CliRunner

    from sbcompile.cli import main

    model = tmp_path / "m.onnx"
    onnx.save(_stateful(), model)
    np.savez(tmp_path / "calib.npz", **_data(12))
    np.savez(tmp_path / "x.npz", **_data(3))
    out = tmp_path / "m.sbc"
    r = CliRunner().invoke(main, ["compile", str(model), "--preset", "loihi2", "--calib",
                                  str(tmp_path / "calib.npz"), "--set", "targets=onnxruntime",
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    got = {}
    for target in ("reference", "onnxruntime"):
        r = CliRunner().invoke(main, ["run", str(out), "--input", str(tmp_path / "x.npz"),
                                      "--target", target, "-o", str(tmp_path / f"{target}.npz")])
        assert r.exit_code == 0, r.output
        got[target] = np.load(tmp_path / f"{target}.npz")["y"]
    assert got["reference"].shape == (3, 3)
    np.testing.assert_allclose(got["onnxruntime"], got["reference"], rtol=1e-5, atol=1e-6)


def _lstm(hidden=5) -> onnx.ModelProto:
    """x[seq, batch, 4] -> LSTM -> y[seq, 1, batch, hidden]; the sequence length symbolic."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.4, (1, 4 * hidden, 4)).astype(np.float32)
    r = rng.normal(0, 0.4, (1, 4 * hidden, hidden)).astype(np.float32)
    node = h.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm", hidden_size=hidden)
    graph = h.make_graph([node], "lstm", [h.make_tensor_value_info("x", T.FLOAT,
                                                                   ["seq", "batch", 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)],
                         [_init("w", w), _init("r", r)])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_a_sequence_length_the_calibration_data_fixes_is_pinned(tmp_path):
    """`check` accepts the model with a note; compile pins the sequence length from the
    calibration data (the batch stays symbolic) and the float graph matches onnxruntime."""
    from click.testing import CliRunner

    from sbcompile.cli import main
    from sbcompile.errors import DynamicDimError

    model = _lstm()
    with pytest.raises(DynamicDimError) as e:
        load_onnx(model)
    assert e.value.dims == ("seq",) and "calibration data" in str(e.value)
    onnx.save(model, tmp_path / "lstm.onnx")
    r = CliRunner().invoke(main, ["check", str(tmp_path / "lstm.onnx")])
    assert r.exit_code == 0 and "note: node 'lstm' (LSTM)" in r.output, r.output
    calib = {"x": RNG.standard_normal((6, 10, 4)).astype(np.float32)}
    art = compile_model(model, "loihi2", calib=calib, overrides={"targets": ""})
    assert art.float_graph.values["x"].shape == (6, "batch", 4)
    x = RNG.standard_normal((6, 3, 4)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(run(art.float_graph, {"x": x})["y"],
                               session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(SbcError, match="input 'x' has shape"):
        run(art.graph, {"x": x[:4]})


def _runtime_if(same_shapes: bool = True) -> onnx.ModelProto:
    """y = x @ w; if mean(y) >= 0: relu(y) @ v (a layer only one branch runs) else: -y (or,
    not ``same_shapes``, its row sums [batch, 1])."""
    rng = np.random.default_rng(2)
    then_b = h.make_graph([h.make_node("Relu", ["y"], ["r"]),
                           h.make_node("MatMul", ["r", "v"], ["t"], name="then_fc")],
                          "then", [], [h.make_tensor_value_info("t", T.FLOAT, ["batch", 6])])
    else_b = h.make_graph([h.make_node("Neg", ["y"], ["e"]) if same_shapes else
                           h.make_node("ReduceSum", ["y"], ["e"], keepdims=1)], "else", [],
                          [h.make_tensor_value_info("e", T.FLOAT,
                                                    ["batch", 6 if same_shapes else 1])])
    nodes = [h.make_node("MatMul", ["x", "w"], ["y"], name="fc"),
             h.make_node("ReduceMean", ["y"], ["m"], keepdims=0),
             h.make_node("GreaterOrEqual", ["m", "zero"], ["c"]),
             h.make_node("If", ["c"], ["out"], name="branch", then_branch=then_b,
                         else_branch=else_b)]
    graph = h.make_graph(nodes, "runtime_if",
                         [h.make_tensor_value_info("x", T.FLOAT, ["batch", 6])],
                         [h.make_tensor_value_info("out", T.FLOAT, None)],
                         [_init("w", rng.standard_normal((6, 6)).astype(np.float32)),
                          _init("v", rng.standard_normal((6, 6)).astype(np.float32)),
                          _init("zero", np.float32(0))])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_an_if_on_a_runtime_value_selects_between_both_branches():
    """Both branches lowered, each output chosen by the condition: equal to onnxruntime for
    inputs that take either branch, spiked too."""
    model = _runtime_if()
    graph = load_onnx(model)
    assert "where" in {n.op for n in graph.nodes}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    taken = set()
    for sign in (1, -1):
        feed = {"x": sign * x}
        want = session.run(None, feed)[0]
        taken.add(bool(np.mean(feed["x"] @ onnx.numpy_helper.to_array(
            model.graph.initializer[0])) >= 0))
        np.testing.assert_allclose(run(graph, feed)["out"], want, rtol=1e-5, atol=1e-6)
    assert taken == {True, False}
    art = compile_model(model, "loihi2", calib={"x": np.concatenate([x, -x])},
                        overrides={"targets": ""})
    assert {"fc", "then_fc"} <= set(art.graph.meta["layers"]) or \
        len(art.graph.meta["layers"]) == 2


def test_an_if_whose_branches_disagree_on_shapes_is_refused_naming_it():
    with pytest.raises(SbcError, match="node 'branch' \\(If\\): the condition is known only at "
                                       "run time and the branches declare different"):
        load_onnx(_runtime_if(same_shapes=False))


def _rate_switch() -> onnx.ModelProto:
    """x[batch, n]; if sr == 16000: x @ w16 over n = 8 samples, else: the 8 kHz branch reshapes
    x to half its length first (branches of different shapes, as Silero VAD's)."""
    rng = np.random.default_rng(3)
    then_b = h.make_graph([h.make_node("MatMul", ["x", "w16"], ["t"], name="fc16")], "then", [],
                          [h.make_tensor_value_info("t", T.FLOAT, ["batch", 4])])
    else_b = h.make_graph([h.make_node("Slice", ["x", "zero", "four", "one"], ["half"]),
                           h.make_node("MatMul", ["half", "w8"], ["e"], name="fc8"),
                           h.make_node("Unsqueeze", ["e", "one"], ["e3"])], "else", [],
                          [h.make_tensor_value_info("e3", T.FLOAT, ["batch", 1, 4])])
    nodes = [h.make_node("Equal", ["sr", "k16"], ["c"]),
             h.make_node("If", ["c"], ["out"], name="rate", then_branch=then_b,
                         else_branch=else_b)]
    graph = h.make_graph(nodes, "rate_switch",
                         [h.make_tensor_value_info("x", T.FLOAT, ["batch", "n"]),
                          h.make_tensor_value_info("sr", T.INT64, [])],
                         [h.make_tensor_value_info("out", T.FLOAT, None)],
                         [_init("w16", rng.standard_normal((8, 4)).astype(np.float32)),
                          _init("w8", rng.standard_normal((4, 4)).astype(np.float32)),
                          _init("k16", np.array(16000, np.int64)),
                          _init("zero", np.array([0])), _init("four", np.array([4])),
                          _init("one", np.array([1]))])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_an_if_on_a_given_once_input_takes_the_calibrated_branch_and_guards_it():
    """The branches disagree on shapes, so no select: the sample rate of the calibration data
    picks the branch; the compiled model runs that rate and refuses another by name."""
    from sbcompile.api import CompiledModel

    model = _rate_switch()
    calib = {"x": RNG.standard_normal((6, 8)).astype(np.float32), "sr": np.array(16000)}
    art = compile_model(model, "loihi2", calib=calib, overrides={"targets": ""})
    assert art.graph.meta["input_guards"] == {"sr": {"value": 16000, "dtype": "int64"}}
    feed = {"x": RNG.standard_normal((3, 8)).astype(np.float32), "sr": np.array(16000)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(CompiledModel(art).run(feed, use_float=True).outputs["out"],
                               session.run(None, feed)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(SbcError, match="input 'sr' is 8000; the model was compiled for sr = "
                                       "16000"):
        CompiledModel(art).run({**feed, "sr": np.array(8000)})


def test_a_classical_ml_model_is_refused_in_one_line():
    node = h.make_node("LinearClassifier", ["x"], ["label", "prob"], domain="ai.onnx.ml",
                       coefficients=[1.0, 2.0, 3.0, 4.0], classlabels_ints=[0, 1],
                       intercepts=[0.0, 0.0])
    graph = h.make_graph([node], "ml", [h.make_tensor_value_info("x", T.FLOAT, ["N", 2])],
                         [h.make_tensor_value_info("label", T.INT64, ["N"]),
                          h.make_tensor_value_info("prob", T.FLOAT, ["N", 2])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17),
                                               h.make_opsetid("ai.onnx.ml", 3)], ir_version=8)
    with pytest.raises(SbcError) as e:
        load_onnx(model)
    assert "'ai.onnx.ml' (classical machine learning" in str(e.value)
    assert "\n" not in str(e.value)
