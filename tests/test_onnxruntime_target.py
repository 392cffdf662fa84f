"""The onnxruntime target runs the QDQ export in batches and gives the reference's outputs bit for
bit on the digits CNN (static and dynamic thresholds), whatever the batch size; the CLI takes
--target onnxruntime."""
import numpy as np
import pytest
from click.testing import CliRunner

from sbcompile.cli import main
from sbcompile.demo import EXAMPLE
from sbcompile.errors import SbcError
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference
from sbcompile.runtime.onnxruntime_target import OnnxruntimeProgram

HELD = {"image": load_npz(EXAMPLE / "heldout.npz")["image"][:100]}


@pytest.fixture(scope="module", params=["loihi2", "spikingbrain"])
def art(request):
    return compile_model(EXAMPLE / "model.onnx", request.param,
                         calib=load_npz(EXAMPLE / "calib.npz"))


@pytest.mark.parametrize("batch", [1, 32, 64])
def test_matches_the_reference_in_any_batch(art, batch):
    want = reference.run(art.graph, HELD)["logits"]
    got = OnnxruntimeProgram(art.graph).run(HELD, batch_size=batch, progress=False)["logits"]
    np.testing.assert_array_equal(got, want)  # dynamic thresholds too: the mean in numpy's order


def test_cli_run_on_onnxruntime(art, tmp_path):
    art.save(tmp_path / "m.sbc")
    np.savez(tmp_path / "x.npz", **HELD)
    r = CliRunner().invoke(main, ["run", str(tmp_path / "m.sbc"), "--input",
                                  str(tmp_path / "x.npz"), "--target", "onnxruntime", "-o",
                                  str(tmp_path / "y.npz")])
    assert r.exit_code == 0, r.output
    want = reference.run(art.graph, HELD)["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["logits"], want, rtol=1e-4,
                               atol=1e-4)


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
    art = compile_model(model, "loihi2", calib={"x": x})
    program = OnnxruntimeProgram(art.graph)
    assert program.run({"x": x}, progress=False)["y"].shape == (6, 4)
    with pytest.raises(SbcError, match="static batch is 2"):
        program.run({"x": x[:5]}, progress=False)
