"""The onnxruntime target runs the stored QDQ export in batches and gives the reference's outputs
and integer counts bit for bit on the digits CNN (static and dynamic thresholds), whatever the
batch size; the CLI takes --target onnxruntime; an artifact without the program says how to get
one."""
import numpy as np
import pytest
from click.testing import CliRunner

from sbcompile.cli import main
from sbcompile.demo import EXAMPLE
from sbcompile.errors import SbcError
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime.targets import run_artifact, stored_program

HELD = {"image": load_npz(EXAMPLE / "heldout.npz")["image"][:100]}
TARGETS = {"targets": "onnxruntime"}


@pytest.fixture(scope="module", params=["loihi2", "spikingbrain"])
def art(request):
    return compile_model(EXAMPLE / "model.onnx", request.param,
                         calib=load_npz(EXAMPLE / "calib.npz"), overrides=TARGETS)


@pytest.mark.parametrize("batch", [1, 32, 64])
def test_matches_the_reference_in_any_batch(art, batch):
    want = run_artifact(art, "reference", HELD)
    program = stored_program(art.programs, art.graph, "onnxruntime")
    got = program.run(HELD, batch_size=batch, progress=False, keep_integers=True)
    np.testing.assert_array_equal(got["logits"], want.outputs["logits"])
    assert want.counts
    for name, value in want.counts.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_cli_run_on_onnxruntime(art, tmp_path):
    art.save(tmp_path / "m.sbc")
    np.savez(tmp_path / "x.npz", **HELD)
    r = CliRunner().invoke(main, ["run", str(tmp_path / "m.sbc"), "--input",
                                  str(tmp_path / "x.npz"), "--target", "onnxruntime", "-o",
                                  str(tmp_path / "y.npz")])
    assert r.exit_code == 0, r.output
    want = run_artifact(art, "reference", HELD).outputs["logits"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["logits"], want)


def test_without_the_program_the_error_names_the_setting():
    art = compile_model(EXAMPLE / "model.onnx", "loihi2", calib=load_npz(EXAMPLE / "calib.npz"))
    with pytest.raises(SbcError, match="--set targets=onnxruntime"):
        run_artifact(art, "onnxruntime", HELD)


def test_static_batch_needs_whole_batches():
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    w = onnx.numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = h.make_graph([h.make_node("MatMul", ["x", "w"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, [2, 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2, 4])], [w])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    art = compile_model(model, "loihi2", calib={"x": x}, overrides=TARGETS)
    program = stored_program(art.programs, art.graph, "onnxruntime")
    assert program.run({"x": x}, progress=False)["y"].shape == (6, 4)
    with pytest.raises(SbcError, match="static batch is 2"):
        program.run({"x": x[:5]}, progress=False)


def test_refuses_counts_at_the_safety_clamp_as_the_reference_does():
    """Inputs far beyond every threshold: counts would be the encoder's safety clamp, not the
    model's; the onnxruntime target refuses them with the reference's error (it used to return
    the clamped counts)."""
    art = compile_model(EXAMPLE / "model.onnx", "spikingbrain", overrides=TARGETS)
    huge = {"image": np.full((2, 1, 8, 8), 1e30, np.float32)}
    with pytest.raises(SbcError, match="safety clamp of 1048576") as want:
        run_artifact(art, "reference", huge)
    with pytest.raises(SbcError) as got:
        run_artifact(art, "onnxruntime", huge)
    assert str(got.value) == str(want.value)
    program = stored_program(art.programs, art.graph, "onnxruntime")
    clean = run_artifact(art, "onnxruntime", HELD)  # and in-range inputs still run
    np.testing.assert_array_equal(clean.outputs["logits"],
                                  program.run(HELD, progress=False)["logits"])


def test_a_program_of_another_graph_is_refused(art):
    """The stored program must read the graph's inputs and write its outputs and integer values:
    another model in its place is an artifact error, not another model's answers."""
    from sbcompile.errors import ArtifactError
    from sbcompile.runtime.onnxruntime_target import MODEL_MEMBER, OnnxruntimeProgram

    other = compile_model(EXAMPLE / "model.onnx", "loihi2", calib=load_npz(EXAMPLE / "calib.npz"),
                          overrides={"targets": "onnxruntime", "exclude": "*"})
    program = OnnxruntimeProgram.from_members(
        {MODEL_MEMBER: stored_program(other.programs, other.graph, "onnxruntime").model},
        art.graph)
    with pytest.raises(ArtifactError, match="is not the graph's"):
        program.run(HELD, progress=False)
