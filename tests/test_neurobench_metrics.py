"""NeuroBench metrics in report.json: what the neurobench package computes on the PyTorch form,
equal on the digits CNN to sbcompile's own figures where both define the same quantity, and on
two models equal to the package's own layer arithmetic applied to the reference interpreter's
counts."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sbcompile.api import compile
from sbcompile.demo import EXAMPLE
from sbcompile.npz import load_npz
from sbcompile.runtime.reference import evaluate

pytest.importorskip("neurobench")
torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
import models  # noqa: E402

from sbcompile.neurobench_metrics import neurobench_metrics  # noqa: E402

CALIB = load_npz(EXAMPLE / "calib.npz")


@pytest.fixture(scope="module")
def digits():
    model = compile(EXAMPLE / "model.onnx", calib=CALIB, overrides={"targets": ["torch"]})
    return model, neurobench_metrics(model, CALIB)


def test_digits_equal_our_counters(digits):
    """ActivationSparsity is our count-zero figure; Dense is the spiked layers' structural
    synapses (Lava's connectivity, one token per sample here); ConnectionSparsity the zero
    fraction of their int8 weights."""
    from sbcompile.backends.lava import lower
    from sbcompile.chip import mapping_summary

    model, nb = digits
    m = nb["metrics"]
    assert m["ActivationSparsity"] == pytest.approx(
        model.report["totals"]["sparsity"]["count_zero"], abs=1e-12)
    synapses = mapping_summary(lower(model.graph, model.config))["synapses"]
    assert m["SynapticOperations"]["Dense"] == synapses
    weights = [model.graph.params[n.inputs[1]] for n in model.graph.nodes
               if n.op in ("spike_linear", "spike_conv")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert m["ConnectionSparsity"] == round(zeros, 4)
    assert m["SynapticOperations"]["Effective_ACs"] == 0  # multi-bit counts: MACs
    assert 0 < m["SynapticOperations"]["Effective_MACs"] < m["SynapticOperations"]["Dense"]
    form = model.to_torch("cpu")
    assert m["Footprint"] == sum(t.numel() * t.element_size()
                                 for t in [*form.parameters(), *form.buffers()])


def _packages_arithmetic(model, feeds: dict) -> dict:
    """NeuroBench's single-layer arithmetic (neurobench.metrics.utils.layers) on nn modules of
    the spiked layers fed the reference interpreter's counts."""
    from neurobench.metrics.utils.layers import single_layer_MACs

    from sbcompile.neurobench_metrics import _connection

    nodes = [n for n in model.graph.nodes if n.op in ("spike_linear", "spike_conv")]
    env = evaluate(model.graph, feeds, keep=[n.inputs[0] for n in nodes])
    samples = len(next(iter(feeds.values())))
    macs = acs = dense = zeros = total = 0
    for node in nodes:
        counts = torch.from_numpy(env[node.inputs[0]].astype(np.float64))
        layer = _connection(node, torch.from_numpy(
            model.graph.params[node.inputs[1]].astype(np.float64)), torch)
        ops, spiking = single_layer_MACs(counts, layer)
        acs, macs = (acs + ops, macs) if spiking else (acs, macs + ops)
        dense += single_layer_MACs(counts, layer, total=True)[0]
        zeros += int((counts == 0).sum())
        total += counts.numel()
    return {"Effective_MACs": macs / samples, "Effective_ACs": acs / samples,
            "Dense": dense / samples, "ActivationSparsity": zeros / total}


@pytest.mark.parametrize("which", ["digits", "mlp"])
def test_report_json_is_the_packages_computation(which, digits, tmp_path):
    if which == "digits":
        model, nb = digits
        feeds = CALIB
    else:
        zoo = models.build_mlp()
        model = compile(zoo.onnx_bytes(), calib=zoo.inputs, overrides={"targets": ["torch"]})
        feeds = zoo.eval_inputs
        nb = neurobench_metrics(model, feeds, batch_size=3)  # uneven batches
    expected = _packages_arithmetic(model, feeds)
    ops = nb["metrics"]["SynapticOperations"]
    for k in ("Effective_MACs", "Effective_ACs", "Dense"):
        assert ops[k] == pytest.approx(expected[k], rel=1e-12), k
    assert nb["metrics"]["ActivationSparsity"] == pytest.approx(
        expected["ActivationSparsity"], abs=1e-9 if which == "mlp" else 1e-12)


def test_report_command_writes_them(tmp_path):
    from click.testing import CliRunner

    from sbcompile.cli import main

    art = tmp_path / "d.sbc"
    run = CliRunner().invoke
    r = run(main, ["compile", str(EXAMPLE / "model.onnx"), "--calib", str(EXAMPLE / "calib.npz"),
                   "--set", "targets=torch", "-o", str(art)])
    assert r.exit_code == 0, r.output
    r = run(main, ["report", str(art), "--neurobench"])
    assert r.exit_code == 2 and "--neurobench measures a run" in r.output
    r = run(main, ["report", str(art), "--neurobench", "--input", str(EXAMPLE / "calib.npz"),
                   "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep["neurobench"]["metrics"]) == {"Footprint", "ConnectionSparsity",
                                                 "ActivationSparsity", "SynapticOperations"}
    assert "NeuroBench (256 samples" in r.output
