"""The bundled tiny SpikingBrain-style LM (examples/spikingbrain_tiny) end to end: its float IR
against PyTorch, its spiking fidelity on the held-out set, what gets spiked, and greedy
generation (sbcompile.lm) against PyTorch's own greedy loop."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Value
from sbcompile.lm import generate, lm_head, next_token_metrics
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "spikingbrain_tiny"))
from data import encode  # noqa: E402
from spiking import compile_tiny, data, float_graph  # noqa: E402
from weights import load_model  # noqa: E402

EVAL_WINDOWS = 64  # of the 128 shipped held-out windows (the benchmark uses all)


@pytest.fixture(scope="module")
def tiny():
    graph = float_graph()
    held = data("heldout")
    ids, labels = held["input_ids"][:EVAL_WINDOWS], held["labels"][:EVAL_WINDOWS]
    art = compile_tiny(graph, 3.0)
    float_logits = reference.run(graph, {"input_ids": ids})["logits"]
    spiking_logits = reference.run(art.graph, {"input_ids": ids})["logits"]
    return graph, art, ids, labels, float_logits, spiking_logits


def test_float_graph_matches_torch(tiny):
    _, _, ids, _, float_logits, _ = tiny
    with torch.no_grad():
        expected = load_model()(torch.from_numpy(ids[:8])).numpy()
    np.testing.assert_allclose(float_logits[:8], expected, rtol=1e-4, atol=1e-4)


def test_spiking_fidelity(tiny):
    """Goal: loss within 3 % of float (met: +0.7 % on all 128 windows). Agreement: 92.6 % there,
    short of the 97 % goal (docs/SPIKINGBRAIN.md): held here as a regression floor."""
    _, _, _, labels, float_logits, spiking_logits = tiny
    base = next_token_metrics(float_logits, float_logits, labels)
    spiking = next_token_metrics(spiking_logits, float_logits, labels)
    assert spiking["loss"] <= 1.03 * base["loss"]
    assert spiking["accuracy"] >= base["accuracy"] - 0.01
    assert spiking["agreement"] >= 0.90


def test_every_projection_but_lm_head_is_spiked(tiny):
    graph, art, *_ = tiny
    head = lm_head(graph)
    projections = [n.name for n in graph.nodes if n.op == "linear"]
    assert [n.name for n in art.graph.nodes if n.op == "linear"] == [head]
    assert art.report["totals"]["layers_spiked"] == len(projections) - 1 == 32
    spiked = {layer["name"] for layer in art.report["layers"]}
    assert spiked == set(projections) - {head}
    ops = [n.op for n in art.graph.nodes]
    assert ops.count("gla") == 2 and ops.count("gather") == 1
    # the SWA attention is spiked too: integer scores, then the float softmax part
    assert ops.count("attention") == 0
    assert ops.count("spike_scores") == ops.count("spike_attention") == 2
    assert all(n.attrs.get("window") == 32 and n.attrs.get("causal") == 1
               for n in art.graph.nodes if n.op == "spike_attention")


def test_generation_matches_torch_greedy_and_ignores_padding(tiny):
    graph, art, *_ = tiny
    prompt = encode("Return the ")
    tokens = generate(reference.run, graph, prompt, 6)
    model, seq = load_model(), list(prompt)
    with torch.no_grad():
        for _ in range(6):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert tokens == seq[len(prompt):]
    spiking = generate(reference.run, art.graph, prompt, 6)
    assert spiking == generate(reference.run, art.graph, prompt, 6, pad=ord("x"))


def test_generation_slides_past_the_context(tiny):
    """A prompt longer than the context keeps its last T tokens."""
    _, art, ids, *_ = tiny
    long_prompt = list(range(40, 100)) + [int(t) for t in ids[0]]
    assert generate(reference.run, art.graph, long_prompt, 2) == \
        generate(reference.run, art.graph, [int(t) for t in ids[0]], 2)


def test_bad_language_model_inputs(tiny):
    _, art, *_ = tiny
    with pytest.raises(SbcError, match="prompt is empty"):
        generate(reference.run, art.graph, [], 3)
    with pytest.raises(SbcError, match=r"\[0, 128\)"):
        generate(reference.run, art.graph, [300], 3)
    g = Graph("f", ["x"], ["y"], {"x": Value("x", ("batch", 64), "float32"),
                                  "y": Value("y", ("batch", 64, 8), "float32")}, [])
    with pytest.raises(SbcError, match="input 'x' must be int64 token ids"):
        lm_head(g)
