"""The torch target on the CPU: the compiled model as a PyTorch module against the reference
interpreter, on models it was not tuned to. The CPU module follows the reference's float order,
so integer values and outputs are compared bit for bit (assert_array_equal)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import sbcompile
from sbcompile.cli import main
from sbcompile.demo import EXAMPLE
from sbcompile.errors import SbcError
from sbcompile.npz import load_npz
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "spikingbrain_tiny"))
from exactness import run_interpreter_child  # noqa: E402
from models import build_decoder  # noqa: E402

TORCH = {"targets": "torch"}


def assert_same_as_reference(model, feeds: dict[str, np.ndarray]) -> None:
    """Every count and accumulator, and every output, equal to the reference's bits."""
    module = model.to_torch("cpu")
    with torch.no_grad():
        outputs, integers = module.with_integers(
            **{k: torch.from_numpy(v) for k, v in feeds.items()})
    ref = reference.evaluate(model.graph, feeds, keep=module.integer_names)
    assert integers, "the model has spiked layers"
    for name, value in integers.items():
        np.testing.assert_array_equal(value.numpy(), ref[name], err_msg=name)
    for name, value in zip(model.output_names, outputs):
        np.testing.assert_array_equal(value.numpy(), ref[name], err_msg=name)


@pytest.fixture(scope="module")
def digits():
    calib, held = load_npz(EXAMPLE / "calib.npz"), load_npz(EXAMPLE / "heldout.npz")
    return calib, held["image"][:200]


@pytest.mark.parametrize("preset", ["spikingbrain", "loihi2"])
def test_digits_cnn_bit_exact(preset, digits):
    calib, images = digits
    model = sbcompile.compile(EXAMPLE / "model.onnx", preset=preset, calib=calib,
                              overrides=TORCH)
    assert_same_as_reference(model, {"image": images})


def test_decoder_block_bit_exact():
    zoo = build_decoder()
    model = sbcompile.compile(zoo.module, tuple(torch.from_numpy(v) for v in zoo.inputs.values()),
                              calib=zoo.inputs, input_names=list(zoo.inputs), overrides=TORCH)
    assert_same_as_reference(model, zoo.eval_inputs)


def test_tiny_lm_bit_exact():
    from spiking import compile_tiny, data, float_graph

    art = compile_tiny(float_graph())
    art.config["targets"] = ["torch"]
    from sbcompile.api import CompiledModel
    from sbcompile.pipeline import lower_targets
    from sbcompile.config import CompileConfig

    programs, _ = lower_targets(art.graph, CompileConfig.from_json(art.config))
    art.programs.update(programs)
    assert_same_as_reference(CompiledModel(art), {"input_ids": data("heldout")["input_ids"][:4]})


@pytest.fixture(scope="module")
def digits_model(digits, tmp_path_factory):
    calib, images = digits
    model = sbcompile.compile(EXAMPLE / "model.onnx", preset="spikingbrain", calib=calib,
                              overrides=TORCH)
    path = tmp_path_factory.mktemp("torch") / "digits.sbc"
    model.save(path)
    return model, path, images


def test_run_target_torch_equals_reference(digits_model):
    model, _, images = digits_model
    got = model.run({"image": images[:32]}, target="torch", device="cpu")
    ref = model.run({"image": images[:32]})
    assert got.target == "torch" and set(got.counts) == set(ref.counts)
    for name in ref.counts:
        np.testing.assert_array_equal(got.counts[name], ref.counts[name])
    np.testing.assert_array_equal(got.outputs["logits"], ref.outputs["logits"])


def test_cli_run_target_torch(digits_model, tmp_path):
    _, path, images = digits_model
    np.savez(tmp_path / "x.npz", image=images[:8])
    out = tmp_path / "y.npz"
    r = CliRunner().invoke(main, ["run", str(path), "--input", str(tmp_path / "x.npz"),
                                  "--target", "torch", "--device", "cpu", "-o", str(out)])
    assert r.exit_code == 0, r.output
    ref = reference.run(sbcompile.load(path).graph, {"image": images[:8]})
    np.testing.assert_array_equal(np.load(out)["logits"], ref["logits"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_one_line_error(digits_model, tmp_path):
    _, path, images = digits_model
    np.savez(tmp_path / "x.npz", image=images[:2])
    r = CliRunner().invoke(main, ["run", str(path), "--input", str(tmp_path / "x.npz"),
                                  "--target", "torch", "--device", "cuda"])
    assert r.exit_code == 2 and "error: device 'cuda' needs a CUDA GPU" in r.output


def test_saturated_encoder_is_refused_like_the_reference(digits):
    """Without calibration there are no measured count bounds: a value far past vth_max
    reaches the safety clamp, which every target refuses."""
    _, images = digits
    model = sbcompile.compile(EXAMPLE / "model.onnx", preset="spikingbrain", overrides=TORCH)
    hot = images[:2].copy()
    hot[0, 0, 0, 0] = 1e11
    with pytest.raises(SbcError) as ref_err:
        model.run({"image": hot})
    with pytest.raises(SbcError) as torch_err:
        model.run({"image": hot}, target="torch", device="cpu")
    assert str(torch_err.value) == str(ref_err.value)


def test_spiked_backbone_inside_user_code(digits_model):
    """A user's own module: the compiled model as a backbone, a float head trained on top."""
    model, _, images = digits_model
    backbone = model.to_torch("cpu")
    head = torch.nn.Linear(10, 3)
    net = torch.nn.Sequential(backbone, head)
    x = torch.from_numpy(images[:16])
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    before = head.weight.detach().clone()
    loss = net(x).square().mean()
    loss.backward()
    opt.step()
    assert not torch.equal(before, head.weight)  # gradients reach the head
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), head(backbone(x)).numpy(), rtol=0, atol=0)


def test_export(digits_model):
    """torch.export keeps each encoder with its layers as one torch.ops.sbcompile node; the
    exported program gives the eager module's bits."""
    model, _, images = digits_model
    module = model.to_torch("cpu")
    x = torch.from_numpy(images[:8])
    exported = torch.export.export(module, (x,))
    code = exported.graph_module.code
    assert code.count("torch.ops.sbcompile.spiked_convs.default") == 2
    assert code.count("torch.ops.sbcompile.spiked_linears.default") == 2
    expected = module(x)
    np.testing.assert_array_equal(exported.module()(x).numpy(), expected.numpy())


def test_artifact_without_torch_program_names_the_setting(digits):
    calib, _ = digits
    model = sbcompile.compile(EXAMPLE / "model.onnx", preset="loihi2", calib=calib,
                              overrides={"targets": "lava"})
    with pytest.raises(SbcError, match="--set targets=torch"):
        model.to_torch("cpu")


# ---- the GPU paths on Triton's interpreter (a child process: TRITON_INTERPRET=1) ---------------
CHILD = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.mark.skipif(CHILD, reason="this is the child")
def test_gpu_paths_under_interpreter():
    run_interpreter_child(__file__, "interpreted", passed=5)


@pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process")
@pytest.mark.parametrize("preset", ["spikingbrain", "loihi2"])
def test_interpreted_conv_chains(preset, digits):
    """Encoder + int8 im2col GEMM with the decode fused, on the digits CNN."""
    calib, images = digits
    model = sbcompile.compile(EXAMPLE / "model.onnx", preset=preset, calib=calib,
                              overrides=TORCH)
    assert_kernels_exact(model, {"image": images[:16]})


@pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process")
@pytest.mark.parametrize("rows", [1, 8, 24])
def test_interpreted_linear_paths(rows):
    """An MLP at 1 row (event GEMV), 8 (dense-count GEMV), 24 (int8 GEMM)."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.SiLU(), torch.nn.Linear(256, 64))
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    model = sbcompile.compile(mlp, (torch.from_numpy(x),), calib={"x": x}, input_names=["x"],
                              overrides={**TORCH, "triton_density": "0.1"})
    assert_kernels_exact(model, {"x": x[:rows]})


def assert_kernels_exact(model, feeds) -> None:
    """Integer values equal the reference's; float32 outputs within 1e-5 of the largest."""
    module = model.program("torch").module("cpu", interpret=True, wide=False)
    with torch.no_grad():
        outputs, integers = module.with_integers(
            **{k: torch.from_numpy(v) for k, v in feeds.items()})
    ref = reference.evaluate(model.graph, feeds, keep=module.integer_names)
    for name, value in integers.items():
        np.testing.assert_array_equal(value.numpy(), ref[name], err_msg=name)
    for name, value in zip(model.output_names, outputs):
        scale = max(1.0, float(np.abs(ref[name]).max()))
        np.testing.assert_allclose(value.numpy(), ref[name], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("peak,channels", [(100, 64), (5000, 64), (2 ** 20, 4)])
def test_cpu_products_exact_past_float32(peak, channels):
    """Counts whose products pass 2^24: float32 when the bound allows, else two float32 halves
    (the float64 fallback is for bounds past 2^47, where int32 has long overflowed); the
    accumulators equal the reference's in every case."""
    from sbcompile.runtime import reference_spike as rs
    from sbcompile.runtime.torch.spike_ops import conv_nd, exact_product

    rng = np.random.default_rng(peak)
    counts = rng.integers(-peak, peak + 1, (2, channels, 6, 6)).astype(np.int32)
    weight = rng.integers(-127, 128, (8, channels, 3, 3)).astype(np.int8)
    bound = int(np.abs(weight.astype(np.int64)).reshape(8, -1).sum(axis=1).max())
    w = torch.from_numpy(weight).float()
    acc = exact_product(lambda c: conv_nd(c, w.to(c.dtype), None, [1, 1], [1, 1, 1, 1],
                                          [1, 1], 1), torch.from_numpy(counts).float(),
                        int(np.abs(counts).max()), bound)
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    np.testing.assert_array_equal(acc.numpy().astype(np.int64),
                                  rs.spike_conv(attrs, counts, weight).astype(np.int64))
