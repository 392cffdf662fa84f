"""The attention_quantize pass (spiked SWA query, INT8 K/V per token and head, integer scores)
on a SpikingBrain-shaped SWA layer: exact counts and scores against numpy, the int8 bound,
fidelity, exclusion, and bit-exact counts and scores on Lava and Triton."""
import os
import subprocess
import sys

import numpy as np

from sbcompile.config import make_config
from sbcompile.ir.validate import validate
from sbcompile.passes import attention_quantize
from sbcompile.runtime import reference
from sbcompile.streaming import StackShape, decoder_layer

SHAPE = StackShape(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=96,
                   window=4)


def _layer_and_input(index: int = 1):
    graph = decoder_layer(SHAPE, index, 8)
    x = np.random.default_rng(7).standard_normal((2, 8, SHAPE.hidden)).astype(np.float32)
    return graph, {"hidden_in": x}


def test_counts_exact_and_output_close():
    graph, feeds = _layer_and_input()
    att = next(n for n in graph.nodes if n.op == "attention")
    q, k, v = att.inputs
    out = attention_quantize.run(graph, make_config("spikingbrain"))
    validate(out)
    names = out.meta["attention_quantize"][att.name]
    env = reference.evaluate(out, feeds, keep=[q, k, v, *names.values()])
    kk = np.repeat(env[names["k"]].astype(np.int64), 2, axis=1)  # 4 query heads, 2 KV heads
    np.testing.assert_array_equal(env[names["scores"]],
                                  np.einsum("bhid,bhjd->bhij", env[names["q"]], kk))
    vth = np.clip(np.abs(env[q]).mean(-1, keepdims=True, dtype=np.float32) / np.float32(3.0),
                  1e-5, 1e4).astype(np.float32)
    np.testing.assert_array_equal(env[names["q"]], np.rint(env[q] / vth).astype(np.int32))
    for value, counts in ((k, names["k"]), (v, names["v"])):
        x, c = env[value], env[counts]
        scale = np.maximum(np.abs(x).max(-1, keepdims=True) / np.float32(127), np.float32(1e-8))
        np.testing.assert_array_equal(c, np.rint(x / scale).astype(np.int32))
        assert np.abs(c).max() == 127  # each token's largest |x| maps to the int8 limit
        assert np.all(np.abs(c * scale - x) <= scale / 2 + 1e-6)
    want = reference.run(graph, feeds)["hidden_out"]
    got = env["hidden_out"]
    cos = float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want))
    assert 0.99 < cos < 1.0


def test_excluded_and_attention_free_graphs_are_left_alone():
    graph, feeds = _layer_and_input()
    att = next(n for n in graph.nodes if n.op == "attention")
    kept = attention_quantize.run(graph, make_config("spikingbrain", exclude=[att.name]))
    assert [n.op for n in kept.nodes] == [n.op for n in graph.nodes]
    gla, gla_feeds = _layer_and_input(index=0)
    same = attention_quantize.run(gla, make_config("spikingbrain"))
    assert same.meta["attention_quantize"] == {}
    np.testing.assert_array_equal(reference.run(same, gla_feeds)["hidden_out"],
                                  reference.run(gla, gla_feeds)["hidden_out"])


def test_spikingbrain_attention_runs_bit_exact_on_lava_and_triton(tmp_path):
    """Wired into the pipeline (preset spikingbrain; spikingbrain_kv8 is the same preset): the
    attention's counts and its integer scores, like every spiked layer's counts and
    accumulators, equal the reference bit for bit on the Lava simulation and on Triton's
    interpreter (in a child process that chose it through TRITON_INTERPRET=1, as Triton's mode
    is fixed when Triton is first imported)."""
    import sbcompile

    graph, feeds = _layer_and_input()
    feeds = {k: v[:1] for k, v in feeds.items()}
    model = sbcompile.compile(graph, preset="spikingbrain", calib=feeds)
    assert model.config.attention_quantize
    assert make_config("spikingbrain_kv8").attention_quantize
    att = next(n for n in graph.nodes if n.op == "attention")
    names = model.graph.meta["attention_quantize"][att.name]
    ref = model.run(feeds)
    assert set(names.values()) <= set(ref.counts)
    scores = ref.counts[names["scores"]]
    assert scores.dtype == np.int32 and np.abs(scores).max() > 0
    model.save(tmp_path / "m.sbc")
    np.savez(tmp_path / "x.npz", **feeds)
    child = ("import sys, numpy as np, sbcompile\n"
             "r = sbcompile.load(sys.argv[1]).run(dict(np.load(sys.argv[2])), 'triton')\n"
             "np.savez(sys.argv[3], **r.counts, **r.outputs)\n")
    subprocess.run([sys.executable, "-c", child, tmp_path / "m.sbc", tmp_path / "x.npz",
                    tmp_path / "triton.npz"], check=True, timeout=600,
                   env={**os.environ, "TRITON_INTERPRET": "1"})
    runs = {"lava": model.run(feeds, target="lava", timeout=240),
            "triton": dict(np.load(tmp_path / "triton.npz"))}
    for target, got in runs.items():
        values = got.counts | got.outputs if target == "lava" else got
        for name, counts in ref.counts.items():
            np.testing.assert_array_equal(values[name], counts, err_msg=f"{target} {name}")
        np.testing.assert_allclose(values["hidden_out"], ref.outputs["hidden_out"], rtol=1e-5,
                                   atol=1e-5)


def test_layers_entries_set_the_query_k_or_keep_attention_float():
    graph, _ = _layer_and_input()
    att = next(n for n in graph.nodes if n.op == "attention")
    config = make_config("spikingbrain")
    config.layers = {att.name: {"k": 5.0}}
    out = attention_quantize.run(graph, config)
    q_encoder = next(n for n in out.nodes
                     if n.op == "spike_encode" and n.inputs[0] == att.inputs[0])
    assert q_encoder.attrs["k"] == 5.0
    config.layers = {att.name: {"float": True}}
    kept = attention_quantize.run(graph, config)
    assert [n.op for n in kept.nodes] == [n.op for n in graph.nodes]
