"""SmolLM2 (examples/smollm2) through sbcompile. CI runs a stand-in of the same architecture
built in code (Llama: GQA 9/3, SwiGLU, RMSNorm, RoPE, tied embeddings; random weights, narrow,
two layers): its float graph against PyTorch, every projection spiked but the lm_head, greedy
generation, and one decoder layer's integer values equal on the reference, Lava, the Triton
interpreter and onnxruntime (the onnx-qdq export). The real model's tests run where
``examples/smollm2/fetch.py`` has cached it (and the ``llm`` extra is installed)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "smollm2"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from exactness import assert_lava_matches_reference  # noqa: E402
from fetch import is_fetched  # noqa: E402
from smollm2_model import DecoderLayer, Logits, float_graph, layer_graph, stand_in  # noqa: E402

from sbcompile.config import make_config  # noqa: E402
from sbcompile.lm import generate, lm_head  # noqa: E402
from sbcompile.pipeline import compile_graph  # noqa: E402
from sbcompile.runtime import reference  # noqa: E402
from sbcompile.runtime.targets import integer_values  # noqa: E402

CONTEXT = 16
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@pytest.fixture(scope="module")
def small():
    lm = stand_in(layers=2)
    ids = np.random.default_rng(0).integers(0, lm.config.vocab_size, (4, CONTEXT))
    return lm, float_graph(lm, CONTEXT), ids


def test_stand_in_float_graph_matches_torch_and_names_its_layers(small):
    lm, graph, ids = small
    with torch.no_grad():
        expected = Logits(lm)(torch.from_numpy(ids)).numpy()
    got = reference.run(graph, {"input_ids": ids})["logits"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    linear = [n.name for n in graph.nodes if n.op == "linear"]
    assert linear == [f"model.layers.{i}.{p}" for i in range(2) for p in PROJECTIONS] + \
        ["lm_head"]
    assert [n.name for n in graph.nodes if n.op == "attention"] == \
        ["model.layers.0.self_attn", "model.layers.1.self_attn"]


def test_spikingbrain_spikes_every_projection_and_attention_but_the_lm_head(small):
    lm, graph, ids = small
    config = make_config("spikingbrain", {"targets": ""}, exclude=[lm_head(graph)])
    art = compile_graph(graph, config, {"input_ids": ids})
    assert sorted(layer["name"] for layer in art.report["layers"]) == sorted(
        f"model.layers.{i}.{p}" for i in range(2) for p in PROJECTIONS)
    assert set(art.graph.meta["attention_quantize"]) == {"model.layers.0.self_attn",
                                                          "model.layers.1.self_attn"}
    float_logits = reference.run(graph, {"input_ids": ids})["logits"]
    logits = reference.run(art.graph, {"input_ids": ids})["logits"]
    cos = np.sum(logits * float_logits) / np.linalg.norm(logits) / np.linalg.norm(float_logits)
    assert cos > 0.95


def test_generation_matches_transformers_greedy(small):
    lm, graph, ids = small
    prompt = [int(t) for t in ids[0, :5]]
    with torch.no_grad():
        out = lm.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                          pad_token_id=0)
    assert generate(reference.run, graph, prompt, 6) == out[0, 5:].tolist()


@pytest.fixture(scope="module")
def layer():
    """Decoder layer 1 of the stand-in on an 8-token window, compiled under spikingbrain."""
    lm = stand_in(layers=2)
    graph = layer_graph(lm, 1, 8)
    x = np.random.default_rng(1).standard_normal((1, 8, lm.config.hidden_size))
    feeds = {"hidden_in": x.astype(np.float32)}
    with torch.no_grad():
        expected = DecoderLayer(lm, 1)(torch.from_numpy(feeds["hidden_in"])).numpy()
    np.testing.assert_allclose(reference.run(graph, feeds)["hidden_out"], expected,
                               rtol=1e-5, atol=1e-5)
    art = compile_graph(graph, make_config("spikingbrain", {"targets": ""}), feeds)
    return art, feeds


def test_decoder_layer_integer_values_equal_on_lava(layer):
    art, feeds = layer
    assert len(art.report["layers"]) == len(PROJECTIONS)
    assert_lava_matches_reference(art.graph, feeds, "hidden_out", "lava ")


def test_decoder_layer_integer_values_equal_on_the_triton_interpreter(layer, tmp_path):
    """In a child process that chose Triton's interpreter (fixed when Triton is imported)."""
    from sbcompile.artifact import Artifact

    art, feeds = layer
    compiled = Artifact(art.graph, art.config, art.report, {}, art.float_graph)
    compiled.save(tmp_path / "layer.sbc")
    np.savez(tmp_path / "x.npz", **feeds)
    child = ("import sys, numpy as np, sbcompile\n"
             "from sbcompile.backends.triton import lower\n"
             "from sbcompile.runtime.triton.executor import run\n"
             "m = sbcompile.load(sys.argv[1])\n"
             "got = run(lower(m.graph), dict(np.load(sys.argv[2])), interpret=True)\n"
             "np.savez(sys.argv[3], **got)\n")
    subprocess.run([sys.executable, "-c", child, tmp_path / "layer.sbc", tmp_path / "x.npz",
                    tmp_path / "triton.npz"], check=True, timeout=600,
                   env={**os.environ, "TRITON_INTERPRET": "1"})
    got = dict(np.load(tmp_path / "triton.npz"))
    integer = [n.outputs[0] for n in art.graph.nodes if n.op in ("spike_encode", "spike_linear")]
    want = reference.evaluate(art.graph, feeds, keep=integer)
    for name in integer:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_allclose(got["hidden_out"], want["hidden_out"], rtol=1e-5, atol=1e-5)


def test_decoder_layer_bit_exact_in_the_pytorch_program(layer):
    """The torch target on the CPU follows the reference's float order: integers and output
    equal bit for bit."""
    from sbcompile.api import CompiledModel
    from sbcompile.artifact import Artifact
    from sbcompile.config import CompileConfig
    from sbcompile.pipeline import lower_targets

    art, feeds = layer
    config = CompileConfig.from_json({**art.config, "targets": ["torch"]})
    programs, _ = lower_targets(art.graph, config)
    model = CompiledModel(Artifact(art.graph, config.to_json(), art.report, programs,
                                   art.float_graph))
    module = model.to_torch("cpu")
    with torch.no_grad():
        outputs, integers = module.with_integers(hidden_in=torch.from_numpy(feeds["hidden_in"]))
    want = reference.evaluate(art.graph, feeds, keep=module.integer_names)
    assert integers
    for name, value in integers.items():
        np.testing.assert_array_equal(value.numpy(), want[name], err_msg=name)
    np.testing.assert_array_equal(outputs[0].numpy(), want["hidden_out"])


def test_decoder_layer_onnx_qdq_export_is_exact_under_onnxruntime(layer):
    import onnxruntime as ort

    from sbcompile.backends.export_onnx_qdq import to_onnx
    art, feeds = layer
    graph = art.graph
    keep = integer_values(graph)
    want = reference.evaluate(graph, feeds, keep=keep)
    session = ort.InferenceSession(to_onnx(graph, keep).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    for name in keep:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_allclose(got["hidden_out"], want["hidden_out"], rtol=1e-5, atol=1e-5)


real = pytest.mark.skipif(not is_fetched(), reason="SmolLM2 not cached "
                          "(python examples/smollm2/fetch.py)")


@real
def test_real_model_loads_from_the_gguf_and_answers():
    pytest.importorskip("gguf")
    from smollm2_model import load_float

    lm, tokenizer = load_float()
    assert sum(p.numel() for p in lm.parameters()) == 134_515_008
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = lm.generate(ids, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1]:]).startswith(" Paris")
