"""Spike compilation end to end on models the passes were not tuned to: the digits CNN, an MLP,
a BERT-style encoder and a SwiGLU/RMSNorm decoder block."""
import sys
from pathlib import Path

import numpy as np
import pytest

import sbcompile
from sbcompile.artifact import Artifact
from sbcompile.demo import EXAMPLE, accuracy
from sbcompile.errors import SbcError
from sbcompile.ir.codings import event_linear, expand
from sbcompile.ir.records import spiked_layers
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).parent))
from models import build_bert, build_decoder, build_mlp  # noqa: E402

REPORT_KEYS = {"model", "config", "layers", "totals", "energy", "outputs_fidelity"}
LAYER_KEYS = {"name", "op", "fan_in", "fan_out", "sparsity", "ops", "fidelity"}
SPARSITY_KEYS = {"count_zero", "spike_slot", "spike_slot_window3", "mean_spikes_per_channel",
                 "silent_channels", "T"}
ENERGY_KEYS = {"spiking_pJ", "dense_fp16_pJ", "dense_int8_pJ", "reduction_vs_fp16",
               "reduction_vs_int8", "constants", "convention"}


@pytest.fixture(scope="module")
def digits():
    return load_npz(EXAMPLE / "calib.npz"), load_npz(EXAMPLE / "heldout.npz")


@pytest.mark.parametrize("preset", ["spikingbrain", "loihi2", "ternary"])
def test_digits_accuracy(preset, digits):
    calib, held = digits
    model = sbcompile.compile(EXAMPLE / "model.onnx", preset=preset, calib=calib)
    float_acc = accuracy(model, held["image"], held["label"], use_float=True)
    spike_acc = accuracy(model, held["image"], held["label"])
    print(f"digits {preset}: float {float_acc:.4f} spiking {spike_acc:.4f}")
    assert float_acc > 0.97
    if preset != "ternary":  # ternary (one spike per channel) is reported, not held to float
        assert spike_acc >= float_acc - 0.01
    assert not any(n.op in ("linear", "conv") for n in model.graph.nodes)


@pytest.mark.parametrize("build", [build_bert, build_decoder], ids=["bert", "decoder"])
def test_transformers_keep_cosine(build):
    zoo = build()
    art = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs)
    rep = art.report
    for out, fid in rep["outputs_fidelity"].items():
        assert fid["cosine"] >= 0.99, (out, fid)
    assert rep["totals"]["layers_spiked"] >= 6
    # shared inputs (q, k, v read one normed tensor) are spiked once
    encoders = {layer.encoder for layer in spiked_layers(art.graph).values()}
    assert len(encoders) < rep["totals"]["layers_spiked"]
    # and the attention too: integer scores of the spiked query and int8 keys
    ops = [n.op for n in art.graph.nodes]
    assert ops.count("attention") == 0 and ops.count("spike_scores") >= 1
    # group-of-128 quantisation falls back to per channel on these small widths
    assert all(layer["group_size"] == layer["fan_in"] for layer in rep["layers"])


def test_report_contract_and_roundtrip(tmp_path):
    zoo = build_mlp()
    art = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs)
    rep = art.report
    assert REPORT_KEYS <= set(rep)
    for layer in rep["layers"]:
        assert LAYER_KEYS <= set(layer)
        assert SPARSITY_KEYS <= set(layer["sparsity"])
        assert {"cosine", "snr_db", "max_abs_err"} <= set(layer["fidelity"]["output"])
    assert SPARSITY_KEYS <= set(rep["totals"]["sparsity"])
    for preset in ("spikingbrain", "horowitz45", "vision_snn", "loihi2018"):
        assert ENERGY_KEYS <= set(rep["energy"][preset])
    path = tmp_path / "mlp.sbc"
    art.save(path)
    loaded = Artifact.load(path)
    for a, b in ((art.graph, loaded.graph), (art.baseline, loaded.baseline)):
        ya = reference.run(a, zoo.eval_inputs)
        yb = reference.run(b, zoo.eval_inputs)
        for k in ya:
            np.testing.assert_array_equal(ya[k], yb[k])
    assert loaded.report == rep


def test_integer_path_is_the_event_driven_product():
    """acc of every spiked linear equals sum_t 2^t W @ s_t over the expanded events."""
    zoo = build_mlp()
    art = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs)
    layers = art.graph.meta["layers"]
    keep = [v for info in layers.values() for v in (info["counts"], info["acc"])]
    env = reference.evaluate(art.graph, zoo.eval_inputs, keep=keep)
    for info in layers.values():
        counts, acc = env[info["counts"]], env[info["acc"]]
        w = art.graph.params[info["weight_q"]]
        events = expand(counts, "bitwise_bidirectional")
        np.testing.assert_array_equal(acc.sum(-2), event_linear(events, w,
                                                                "bitwise_bidirectional"))


def test_static_thresholds_and_exclude():
    zoo = build_mlp()
    first = "node_linear"
    for method in ("mse", "percentile"):
        art = compile_model(zoo.onnx_bytes(), "loihi2", calib=zoo.inputs,
                            overrides={"calib_method": method}, exclude=[first])
        names = [layer["name"] for layer in art.report["layers"]]
        assert first not in names and len(names) >= 2
        assert any(n.op == "linear" and n.name == first for n in art.graph.nodes)
        assert art.report["outputs_fidelity"]["logits"]["cosine"] > 0.99
        counts = reference.evaluate(art.graph, zoo.eval_inputs,
                                    keep=[art.graph.meta["layers"][names[0]]["counts"]])
        assert np.abs(next(v for k, v in counts.items() if k != "logits")).max() <= 127


def test_per_channel_static_thresholds_fold_into_weights():
    zoo = build_mlp()
    tensor = compile_model(zoo.onnx_bytes(), "loihi2", calib=zoo.inputs,
                           overrides={"max_count": "7"})
    channel = compile_model(zoo.onnx_bytes(), "loihi2", calib=zoo.inputs,
                            overrides={"max_count": "7", "threshold_granularity": "channel"})
    encoders = [n for n in channel.graph.nodes if n.op == "spike_encode"]
    assert all(channel.graph.params[n.inputs[1]].ndim == 1 for n in encoders)
    cos = [a.report["outputs_fidelity"]["logits"]["cosine"] for a in (tensor, channel)]
    assert cos[1] > 0.99 and cos[1] >= cos[0] - 1e-3, cos


def test_k_trades_accuracy_for_sparsity():
    zoo = build_mlp()
    zeros, cosines = [], []
    for k in ("2", "3", "4"):
        rep = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs,
                            overrides={"k": k}).report
        zeros.append(rep["totals"]["sparsity"]["count_zero"])
        cosines.append(rep["outputs_fidelity"]["logits"]["cosine"])
    assert zeros[0] > zeros[1] > zeros[2]
    assert cosines[0] < cosines[2]


def test_pytorch_api_compiles_a_module_with_any_batch():
    import torch

    torch.manual_seed(3)
    module = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.GELU(),
                                 torch.nn.Linear(32, 5)).eval()
    x = np.random.default_rng(3).standard_normal((40, 12)).astype(np.float32)
    art = sbcompile.compile(module, (torch.from_numpy(x[:2]),), calib={"x": x},
                            input_names=["x"])
    assert art.graph.values["x"].shape[0] == "batch"
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = art.run({"x": x}, use_float=True)
    np.testing.assert_allclose(got.outputs[art.output_names[0]], expected, rtol=1e-5, atol=1e-6)
    assert next(iter(art.report["outputs_fidelity"].values()))["cosine"] > 0.99


def test_public_api_compiles_saves_loads_and_runs_with_one_result_type(tmp_path):
    """sbcompile.compile / load / CompiledModel.run on an ONNX model: the same RunResult on the
    reference and Lava targets (counts equal bit for bit), and a stored program is required."""
    zoo = build_mlp()
    feeds = zoo.eval_inputs
    model = sbcompile.compile(zoo.onnx_bytes(), preset="loihi2", calib=zoo.inputs,
                              overrides={"targets": "lava"})
    model.save(tmp_path / "m.sbc")
    loaded = sbcompile.load(tmp_path / "m.sbc")
    assert loaded.config.preset == "loihi2" and loaded.config.targets == ["lava"]
    ref = loaded.run(feeds)
    chip = loaded.run(feeds, target="lava", timeout=120)
    assert isinstance(ref, sbcompile.RunResult) and isinstance(chip, sbcompile.RunResult)
    assert set(ref.outputs) == set(chip.outputs) == set(loaded.output_names)
    assert ref.counts and set(ref.counts) <= set(chip.counts)
    for name, counts in ref.counts.items():
        np.testing.assert_array_equal(chip.counts[name], counts, err_msg=name)
    assert chip.op_counts and chip.timings["run_s"] > 0 and ref.timings["run_s"] > 0
    with pytest.raises(SbcError, match="holds no triton program.*--set targets="):
        loaded.run(feeds, target="triton", interpret=True)
    with pytest.raises(SbcError, match="reference target only"):
        loaded.run(feeds, target="lava", use_float=True)


def test_expansion_length_policy_orders_spike_slot_sparsity():
    """A longer shared T only adds empty slots: global >= tensor >= token; counts unchanged."""
    zoo = build_mlp()
    reps = {mode: compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs,
                                overrides={"t_mode": mode}).report["totals"]["sparsity"]
            for mode in ("global", "tensor", "token")}
    assert reps["global"]["spike_slot"] >= reps["tensor"]["spike_slot"] \
        >= reps["token"]["spike_slot"]
    assert reps["global"]["spike_slot"] > reps["token"]["spike_slot"]
    assert len({r["count_zero"] for r in reps.values()}) == 1
    assert isinstance(reps["global"]["T"], int) and reps["token"]["T"] is None
