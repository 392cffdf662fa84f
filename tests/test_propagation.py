"""Per-layer error propagation: the report names the layer that costs the most end to end, not the
one with the largest error of its own, on a deep CNN built so that the two differ (the feature
was not tuned on it), and its keys are those the report promises."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sbcompile.cli import main
from sbcompile.config import make_config
from sbcompile.errors import SbcError
from sbcompile.passes.propagation import (graph_with_float_layers, layer_sensitivity,
                                          layer_slice)
from sbcompile.pipeline import compile_graph, load_model
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).parent))
from models import build_cnn, build_sensitive_cnn  # noqa: E402

FIDELITY_KEYS = {"encode", "output", "input", "isolated", "propagated", "introduced",
                 "inherited", "introduced_share"}


def _compile(zoo, **overrides):
    graph = load_model(zoo.onnx_bytes())
    config = make_config("spikingbrain", {k: str(v).lower() for k, v in overrides.items()})
    config.targets = []
    return graph, compile_graph(graph, config, zoo.inputs)


@pytest.fixture(scope="module")
def sensitive():
    return build_sensitive_cnn(), *_compile(build_sensitive_cnn(), sensitivity=True)


def test_contribution_names_the_fragile_layer_not_the_noisy_one(sensitive):
    zoo, graph, art = sensitive
    layers = art.report["layers"]
    assert len(layers) == 6
    noisy, fragile = layers[2], layers[3]
    assert fragile["fan_out"] == 16
    fid = art.report["totals"]["fidelity"]
    # in isolation the noisy layer is far worse, and the local rankings blame it
    assert noisy["fidelity"]["isolated"]["cosine"] < 0.97 < fragile["fidelity"]["isolated"][
        "cosine"]
    assert fid["rankings"]["isolated"][0] == noisy["name"]
    # end to end the fragile one costs the most: keeping it float recovers the most
    assert fid["worst_by"] == "contribution"
    assert fid["worst_layer"] == fid["rankings"]["contribution"][0] == fragile["name"]
    gain = {r["name"]: r["contribution"]["recovered_cosine"] for r in layers}
    assert gain[fragile["name"]] > 0.005
    assert gain[fragile["name"]] > 5 * max(abs(gain[noisy["name"]]), 1e-4)
    # and its error shows downstream: the next layer's input is far worse than its output
    head = layers[4]
    assert head["fidelity"]["input"]["cosine"] < fragile["fidelity"]["output"]["cosine"] - 0.05


def test_fidelity_decomposition(sensitive):
    _, _, art = sensitive
    for layer in art.report["layers"]:
        f = layer["fidelity"]
        assert FIDELITY_KEYS <= set(f)
        assert f["propagated"] == f["output"]  # the old key keeps its meaning
        assert 0.0 <= f["introduced_share"]
    first = art.report["layers"][0]["fidelity"]
    # the first layer reads the graph input: nothing inherited, isolated is propagated
    assert first["input"]["cosine"] == 1.0 and first["inherited"]["cosine"] == 1.0
    assert first["isolated"] == first["propagated"] == first["introduced"]
    assert first["introduced_share"] == pytest.approx(1.0)


def test_float_layer_equals_compiling_with_exclude(sensitive):
    zoo, graph, art = sensitive
    name = art.report["totals"]["fidelity"]["worst_layer"]
    config = make_config("spikingbrain", None, [name])
    config.targets = []
    excluded = compile_graph(graph, config, None).graph
    surgery = graph_with_float_layers(art.graph, graph, [name])
    assert not any(n.op.startswith("spike") and n.name.startswith(name) for n in surgery.nodes)
    np.testing.assert_array_equal(reference.run(surgery, zoo.eval_inputs)["logits"],
                                  reference.run(excluded, zoo.eval_inputs)["logits"])


def _max_abs(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def test_layer_sensitivity_function(sensitive):
    zoo, graph, art = sensitive
    names = [r["name"] for r in art.report["layers"]][2:4]
    res = layer_sensitivity(art.graph, graph, [zoo.eval_inputs], layers=names)
    assert res["ranking"] == names[::-1]  # held-out inputs: fragile still first
    assert set(res["layers"]) == set(names)
    # measured on the nodes after each layer only: as a whole run of the graph would
    spiked = reference.run(art.graph, zoo.eval_inputs)["logits"]
    for name in names:
        whole = reference.run(graph_with_float_layers(art.graph, graph, [name]),
                              zoo.eval_inputs)["logits"]
        got = res["layers"][name]["outputs"]["logits"]["max_abs_err"]
        assert got == _max_abs(whole, reference.run(graph, zoo.eval_inputs)["logits"])
    assert res["spiked"]["logits"]["cosine"] < res["layers"][names[1]]["outputs"]["logits"][
        "cosine"]
    assert res["spiked"]["logits"]["max_abs_err"] == _max_abs(
        spiked, reference.run(graph, zoo.eval_inputs)["logits"])
    with pytest.raises(SbcError, match="'nope' is not a spiked layer"):
        graph_with_float_layers(art.graph, graph, ["nope"])


def test_isolated_slice_is_the_layer_alone():
    zoo = build_cnn()
    graph, art = _compile(zoo)
    for layer in art.report["layers"]:
        info = art.graph.meta["layers"][layer["name"]]
        sl = layer_slice(art.graph, info["input"], info["output"])
        assert sl.inputs == [info["input"]]
        assert [n.op for n in sl.nodes] == ["spike_encode", f"spike_{layer['op']}",
                                            "spike_decode"]
    assert "contribution" not in art.report["layers"][0]  # off unless asked for
    assert "contribution" not in art.report["totals"]["fidelity"]["rankings"]
    assert art.report["totals"]["fidelity"]["worst_by"] == "introduced"


def test_report_command_shows_isolated_and_contribution(tmp_path, sensitive):
    zoo, _, art = sensitive
    path = tmp_path / "m.sbc"
    art.save(path)
    result = CliRunner().invoke(main, ["report", str(path), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    assert "cos iso" in result.output and "recovers" in result.output
    worst = art.report["totals"]["fidelity"]["worst_layer"]
    assert f"worst layer: {worst}" in result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["totals"]["fidelity"]["rankings"] == art.report["totals"]["fidelity"]["rankings"]


def test_bad_sensitivity_value_is_one_error_line(tmp_path):
    from sbcompile.demo import EXAMPLE

    out = tmp_path / "m.sbc"
    result = CliRunner().invoke(main, ["compile", str(EXAMPLE / "model.onnx"), "--set",
                                       "sensitivity=maybe", "-o", str(out)])
    assert result.exit_code == 2
    assert "error: --set sensitivity=maybe: not a valid bool" in result.output
    assert "Traceback" not in result.output and not out.exists()
