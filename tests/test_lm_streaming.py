"""Layer-by-layer compilation (sbcompile.streaming) on a miniature SpikingBrain-shaped stack:
the IR layers against PyTorch, and the streamed compile against per-layer expectations."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sbcompile.artifact import Artifact
from sbcompile.config import make_config
from sbcompile.errors import SbcError
from sbcompile.frontends.gla import gla_recurrent
from sbcompile.runtime import reference
from sbcompile.streaming import StackShape, compile_stream, decoder_layer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "spikingbrain_tiny"))
from model import DecoderLayer, TinyConfig  # noqa: E402

SHAPE = StackShape(layers=4, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=96,
                   window=4, rope_theta=10000.0)
TOKENS = 8


def _params(graph, output: str) -> list[torch.Tensor]:
    node = next(n for n in graph.nodes if n.outputs[0] == output)
    return [torch.from_numpy(np.asarray(graph.params[i])) for i in node.inputs[1:]]


def _hidden(seed: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, TOKENS, SHAPE.hidden)).astype(
        np.float32)


def test_swa_layer_matches_the_example_torch_layer():
    graph = decoder_layer(SHAPE, 1, TOKENS)
    cfg = TinyConfig(vocab=16, hidden=64, heads=4, kv_heads=2, intermediate=96, window=4,
                     context=TOKENS)
    layer = DecoderLayer(cfg, linear_attention=False).eval()
    state = {"input_norm.weight": _params(graph, "input_norm")[0],
             "post_norm.weight": _params(graph, "post_norm")[0],
             "attn.o_proj.weight": _params(graph, "o_proj")[0]}
    for n in ("q", "k", "v"):
        state[f"attn.{n}_proj.weight"], state[f"attn.{n}_proj.bias"] = _params(graph, f"{n}_proj")
    for n in ("gate_proj", "up_proj", "down_proj"):
        state[f"mlp.{n}.weight"] = _params(graph, n)[0]
    layer.load_state_dict(state)
    x = _hidden(1)
    with torch.no_grad():
        expected = layer(torch.from_numpy(x)).numpy()
    got = reference.run(graph, {"hidden_in": x})["hidden_out"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def _rms(x, w, eps):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_gla_layer_matches_torch():
    """GLA with GQA-shared k/v/gate, written out in torch around the GLA reference."""
    graph = decoder_layer(SHAPE, 0, TOKENS)
    p = {name: _params(graph, name) for name in ("input_norm", "post_norm", "q_proj", "k_proj",
                                                 "v_proj", "gk_proj.0", "gk_proj.1", "gla_norm",
                                                 "o_proj", "gate_proj", "up_proj", "down_proj")}
    x = torch.from_numpy(_hidden(2))
    b, t, rep = x.shape[0], TOKENS, SHAPE.heads // SHAPE.kv_heads

    def heads(y, n):
        return y.view(b, t, n, SHAPE.head_dim)

    def shared(y):
        return heads(y, SHAPE.kv_heads).repeat_interleave(rep, dim=2)

    with torch.no_grad():
        h = _rms(x, p["input_norm"][0], SHAPE.eps)
        q = heads(F.relu(h @ p["q_proj"][0].T), SHAPE.heads)
        k = shared(F.relu(h @ p["k_proj"][0].T))
        v = shared(h @ p["v_proj"][0].T)
        gate = (h @ p["gk_proj.0"][0].T) @ p["gk_proj.1"][0].T + p["gk_proj.1"][1]
        o = gla_recurrent(q, k, v, shared(F.logsigmoid(gate) / 16), SHAPE.head_dim ** -0.5)
        o = _rms(o, p["gla_norm"][0], 1e-5).reshape(b, t, -1)
        h = x + o @ p["o_proj"][0].T
        y = _rms(h, p["post_norm"][0], SHAPE.eps)
        mlp = (F.silu(y @ p["gate_proj"][0].T) * (y @ p["up_proj"][0].T)) @ p["down_proj"][0].T
        expected = (h + mlp).numpy()
    got = reference.run(graph, {"hidden_in": x.numpy()})["hidden_out"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_layers_are_deterministic_per_seed_and_index():
    a, b = decoder_layer(SHAPE, 2, TOKENS, seed=5), decoder_layer(SHAPE, 2, TOKENS, seed=5)
    assert a.params.keys() == b.params.keys()
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    c = decoder_layer(SHAPE, 2, TOKENS, seed=6)
    assert not np.array_equal(a.params["q_proj.weight"], c.params["q_proj.weight"])


def test_compile_stream_layer_by_layer(tmp_path):
    calib = _hidden(3)
    config = make_config("spikingbrain", {"targets": ""})
    seen = []
    records = compile_stream((lambda i=i: decoder_layer(SHAPE, i, TOKENS)
                              for i in range(SHAPE.layers)), calib, config, tmp_path,
                             on_layer=seen.append)
    assert seen == records and [r["layer"] for r in records] == [0, 1, 2, 3]
    acts = calib
    for r in records:
        graph = decoder_layer(SHAPE, r["layer"], TOKENS)
        expected = reference.run(graph, {"hidden_in": acts})["hidden_out"]
        art = Artifact.load(tmp_path / f"layer{r['layer']:03d}.sbc")
        got = reference.run(art.graph, {"hidden_in": acts})["hidden_out"]
        cos = float(np.sum(got * expected) / np.linalg.norm(got) / np.linalg.norm(expected))
        assert cos > 0.99
        weights = [n for n in graph.nodes if n.op == "linear"]
        assert r["totals"]["layers_spiked"] == len(weights) == (9 if r["layer"] % 2 == 0 else 7)
        assert r["int8_weight_bytes"] == sum(graph.params[n.inputs[1]].size for n in weights)
        assert r["peak_rss_mb"] >= r["rss_mb"] > 0
        acts = expected


def test_stream_rejects_a_layer_with_two_outputs():
    graph = decoder_layer(SHAPE, 1, TOKENS)
    graph.outputs = graph.outputs + ["attn_residual"]
    with pytest.raises(SbcError, match="layer 0 .* one input and one output"):
        compile_stream([lambda: graph], _hidden(0), make_config("spikingbrain"))


def test_bad_stack_shape():
    with pytest.raises(SbcError, match="heads a multiple of kv_heads"):
        decoder_layer(StackShape(heads=6, kv_heads=4), 0, TOKENS)
