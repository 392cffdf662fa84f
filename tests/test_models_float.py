"""The float path on the test model zoo: each model's IR graph on the reference interpreter
equals onnxruntime on the same ONNX (the GLA block, which onnxruntime cannot run: the PyTorch
module) within 1e-5 relative; the GLA op and its ONNX node; the PyTorch frontend; the artifact
round trip and its rejection of corrupted bytes."""
import io
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sbcompile.artifact import Artifact
from sbcompile.errors import ArtifactError, SbcError
from sbcompile.frontends.gla import (DOMAIN, DOMAIN_VERSION, OP_TYPE, GLABlock,
                                     gated_linear_attention, gla_recurrent)
from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.frontends.torch_frontend import import_module
from sbcompile.ir.graph import Graph
from sbcompile.runtime.reference import run

sys.path.insert(0, str(Path(__file__).parent))
from models import BUILDERS, ZooModel, bert_inputs  # noqa: E402

ONNXRUNTIME_MODELS = ["mlp", "cnn", "bert", "decoder"]
RTOL = 1e-5


@pytest.fixture(scope="module")
def zoo():
    """name -> (ZooModel, its IR graph), each built, exported and imported once."""
    cache: dict[str, tuple[ZooModel, Graph]] = {}

    def get(name: str):
        if name not in cache:
            model = BUILDERS[name]()
            cache[name] = (model, load_onnx(model.onnx_bytes()))
        return cache[name]
    return get


def onnxruntime_outputs(model: ZooModel, feeds: dict) -> dict:
    session = ort.InferenceSession(model.onnx_bytes(), providers=["CPUExecutionProvider"])
    return dict(zip(model.output_names, session.run(model.output_names, feeds)))


def assert_outputs_close(got: dict, expected: dict) -> None:
    """Same names; each within RTOL relative, with an absolute floor of RTOL times the
    output's scale (elements near zero have no meaningful relative error)."""
    assert list(got) == list(expected)
    for name, want in expected.items():
        scale = float(np.max(np.abs(want)))
        np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=RTOL * scale,
                                   err_msg=f"output '{name}'")


# ---- the float graph against onnxruntime / PyTorch --------------------------------------------
@pytest.mark.parametrize("name", ONNXRUNTIME_MODELS)
def test_float_graph_matches_onnxruntime(zoo, name):
    model, graph = zoo(name)
    expected = onnxruntime_outputs(model, model.eval_inputs)
    assert_outputs_close(run(graph, model.eval_inputs), expected)


def test_symbolic_axes_take_other_sizes(zoo):
    """The BERT export keeps batch and sequence symbolic: other sizes than the traced ones run."""
    model, graph = zoo("bert")
    feeds = bert_inputs(np.random.default_rng(9), [3, 6, 1], 6)
    assert_outputs_close(run(graph, feeds), onnxruntime_outputs(model, feeds))


def test_gla_graph_matches_pytorch(zoo):
    model, graph = zoo("gla")
    assert [n.op for n in graph.nodes].count("gla") == 1
    assert_outputs_close(run(graph, model.eval_inputs), model.torch_outputs(model.eval_inputs))


def test_zoo_is_deterministic():
    first, second = BUILDERS["decoder"](), BUILDERS["decoder"]()
    for a, b in zip(first.module.state_dict().values(), second.module.state_dict().values()):
        assert torch.equal(a, b)
    assert all(np.array_equal(first.inputs[k], second.inputs[k]) for k in first.inputs)
    assert not np.array_equal(first.inputs["hidden_states"], first.eval_inputs["hidden_states"])


# ---- the GLA op --------------------------------------------------------------------------------
def gla_closed_form(q, k, v, g, scale):
    """The unrolled recurrence: y_t = scale * sum_{s<=t} sum_i q_ti exp(G_ti - G_si) k_si v_s,
    with G the running sum of g over time (float64)."""
    q, k, v, g = (np.asarray(a, dtype=np.float64) for a in (q, k, v, g))
    cum = np.cumsum(g, axis=1)                                            # [B, T, H, K]
    steps = q.shape[1]
    decay = np.exp(cum[:, :, None] - cum[:, None, :])                     # [B, t, s, H, K]
    causal = np.tril(np.ones((steps, steps)))[None, :, :, None]
    weights = np.einsum("bthk,btshk,bshk->btsh", q, decay, k) * causal    # [B, t, s, H]
    return scale * np.einsum("btsh,bshv->bthv", weights, v)


def _gla_operands(seed: int, batch=2, steps=7, heads=3, key_dim=4, value_dim=5):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, steps, heads, key_dim, generator=gen) for _ in range(2))
    v = torch.randn(batch, steps, heads, value_dim, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(batch, steps, heads, key_dim, generator=gen))
    return q, k, v, g


def test_gla_recurrence_matches_closed_form():
    q, k, v, g = _gla_operands(0)
    y = gla_recurrent(q, k, v, g, 0.7)
    assert y.shape == (2, 7, 3, 5)
    np.testing.assert_allclose(y.numpy(), gla_closed_form(q, k, v, g, 0.7), rtol=1e-5, atol=1e-6)


def test_gla_default_scale_and_operand_checks():
    q, k, v, g = _gla_operands(1)
    torch.testing.assert_close(gated_linear_attention(q, k, v, g),
                               gla_recurrent(q, k, v, g, 4 ** -0.5))
    with pytest.raises(ValueError, match="k .* and g .* must have q's shape"):
        gated_linear_attention(q, k[..., :3], v, g)
    with pytest.raises(ValueError, match="v must be"):
        gated_linear_attention(q, k, v[:, :5], g)


def test_gla_block_is_trainable():
    block = GLABlock(16, 2)
    x = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(2))
    block(x).square().mean().backward()
    grads = [p.grad for p in block.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert block.gk_proj[0].weight.grad.abs().sum() > 0


def test_gla_exports_to_one_custom_node(zoo):
    model, _ = zoo("gla")
    proto = onnx.load_from_string(model.onnx_bytes())
    custom = [n for n in proto.graph.node if n.domain == DOMAIN]
    assert len(custom) == 1 and custom[0].op_type == OP_TYPE and len(custom[0].input) == 4
    (scale,) = custom[0].attribute
    assert scale.name == "scale" and scale.type == onnx.AttributeProto.FLOAT
    assert scale.f == pytest.approx(model.module.attn.head_k_dim ** -0.5)
    assert {o.domain: o.version for o in proto.opset_import}[DOMAIN] == DOMAIN_VERSION


# ---- the PyTorch frontend ----------------------------------------------------------------------
def test_import_module_matches_pytorch():
    model = BUILDERS["mlp"]()
    model.module.train()
    graph = import_module(model.module, {"x": torch.from_numpy(model.inputs["x"])},
                          output_names=["logits"])
    assert model.module.training, "the module's mode is restored"
    assert graph.inputs == ["x"] and graph.outputs == ["logits"]
    model.module.eval()
    assert_outputs_close(run(graph, model.eval_inputs), model.torch_outputs(model.eval_inputs))


@pytest.mark.parametrize("module, inputs, names, message", [
    ("not a module", (np.zeros((2, 16), np.float32),), None, "expected a torch.nn.Module"),
    (torch.nn.Linear(16, 4), ("text",), None, "example input 0 must be a torch.Tensor"),
    (torch.nn.Linear(16, 4), (np.zeros((2, 16), np.float32),), ["a", "b"],
     "2 input names for 1 example inputs"),
    (torch.nn.Linear(16, 4), (torch.zeros(2, 16), torch.zeros(2, 16)), None,
     "cannot export Linear to ONNX: TypeError: too many positional arguments"),
    (torch.nn.Linear(16, 4), (torch.zeros(2, 5),), None,
     "cannot export Linear to ONNX: RuntimeError: a and b must have same reduction dim"),
])
def test_import_module_errors_are_one_line(module, inputs, names, message):
    with pytest.raises(SbcError) as info:
        import_module(module, inputs, input_names=names)
    assert message in str(info.value) and "\n" not in str(info.value)


# ---- the artifact ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bert", "gla"])
def test_artifact_round_trip_is_identical(zoo, name, tmp_path):
    model, graph = zoo(name)
    path = tmp_path / f"{name}.sbc"
    Artifact(graph, config={}).save(path)
    loaded = Artifact.load(path).graph
    assert loaded.to_json() == graph.to_json()
    before, after = run(graph, model.eval_inputs), run(loaded, model.eval_inputs)
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


FLIPS = (0x01, 0xFF)  # one bit (a stray bit error) and the whole byte


def _flip(data: bytes, position: int, mask: int) -> bytes:
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1:]


def _positions(size: int, rng: np.random.Generator, count: int) -> list[int]:
    """First, last and ``count`` random byte positions of a buffer (all of a small one)."""
    if size <= 1024:
        return list(range(size))
    return sorted({0, size - 1, *rng.integers(0, size, count).tolist()})


@pytest.fixture(scope="module")
def saved_mlp(zoo, tmp_path_factory):
    _, graph = zoo("mlp")
    path = tmp_path_factory.mktemp("artifact") / "mlp.sbc"
    Artifact(graph, config={"preset": "float"}).save(path)
    return path


def test_flipped_byte_in_any_member_is_rejected(saved_mlp, tmp_path):
    with zipfile.ZipFile(saved_mlp) as z:
        members = {info.filename: z.read(info) for info in z.infolist()}
    assert {"manifest.json", "graph.json", "tensors.safetensors", "report.json"} <= set(members)
    rng = np.random.default_rng(7)
    corrupted = tmp_path / "corrupted.sbc"
    for name, data in members.items():
        for position in _positions(len(data), rng, 64):
            for mask in FLIPS:
                with zipfile.ZipFile(corrupted, "w") as z:
                    for other, blob in members.items():
                        z.writestr(other, _flip(blob, position, mask) if other == name else blob)
                with pytest.raises(ArtifactError):
                    Artifact.load(corrupted)
                    pytest.fail(f"{name}: byte {position} ^ {mask:#x} was accepted")


def _zip_structure(data: bytes) -> set[int]:
    """Byte positions of the zip's own records: each member's local header, and the central
    directory with its end record (everything after the last member's data)."""
    positions: set[int] = set()
    end = 0
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
            header_end = start + 30 + name_len + extra_len
            positions.update(range(start, header_end))
            end = max(end, header_end + info.compress_size)
    return positions | set(range(end, len(data)))


def test_raw_byte_flips_are_rejected_or_harmless(saved_mlp, tmp_path):
    """A flip anywhere in the zip's records, or at random in its compressed data, either fails
    the load with ArtifactError or (in a field nothing reads, such as a timestamp) loads the very
    same artifact."""
    original = saved_mlp.read_bytes()
    reference = Artifact.load(saved_mlp)
    rng = np.random.default_rng(8)
    corrupted = tmp_path / "corrupted.sbc"
    sampled = rng.integers(0, len(original), 100).tolist()
    for position in sorted(_zip_structure(original).union(sampled)):
        for mask in FLIPS:
            corrupted.write_bytes(_flip(original, position, mask))
            try:
                loaded = Artifact.load(corrupted)
            except ArtifactError:
                continue
            where = f"byte {position} ^ {mask:#x}"
            assert loaded.graph.to_json() == reference.graph.to_json(), where
            assert loaded.config == reference.config, where
            assert loaded.report == reference.report, where
            for key, value in reference.graph.params.items():
                np.testing.assert_array_equal(loaded.graph.params[key], value, err_msg=where)
