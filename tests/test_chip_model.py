"""The chip model (SANA-FE): the spikes and synaptic events it simulates are the run's own, per
layer, on the bundled digits CNN in each signalling mode; report.json's ``chip.sanafe`` holds
energy and latency per inference beside the op-count presets."""
import json

import numpy as np
import pytest

from sbcompile.api import compile
from sbcompile.chip import chip_section, spike_traffic
from sbcompile.demo import EXAMPLE
from sbcompile.npz import load_npz
from sbcompile.runtime.lava.opcounts import compare_with_report, expected_layer_counts

pytest.importorskip("sanafe")

CALIB = load_npz(EXAMPLE / "calib.npz")


@pytest.fixture(scope="module", params=["spikingbrain", "loihi2"])
def digits(request):
    return compile(EXAMPLE / "model.onnx", preset=request.param, calib=CALIB,
                   overrides={"targets": ["lava"]})


def test_simulated_spikes_are_the_runs(digits):
    """On the calibration inputs the per-layer spike messages and synaptic events SANA-FE
    counts equal the compile report's, and those computed from the reference counts."""
    section = chip_section(digits, "loihi", CALIB)
    sim = section["sanafe"]
    program = digits.program("lava")
    by_layer = {n: {"synaptic_ops": v["synaptic_ops"], "spike_messages": v["spike_messages"]}
                for n, v in sim["layers"].items()}
    compared = compare_with_report(by_layer, digits.report, program.mode)
    assert compared and all(compared[n][k]["equal"] for n in compared
                            for k in ("synaptic_ops", "spike_messages")), compared
    counts = spike_traffic(digits.graph, CALIB, program)
    encoders = {e["name"]: e for e in program.plan["encoders"]}
    for syn in program.plan["synapses"]:
        fan_out = program.geometry(syn).fan_out()
        expected = expected_layer_counts(counts[encoders[syn["encoder"]]["counts"]], fan_out,
                                         program.mode)
        for k in ("synaptic_ops", "spike_messages"):
            assert sim["layers"][syn["layer"]][k] == expected[k]
    assert sim["events"]["spike_messages"] == sum(v["spike_messages"]
                                                  for v in sim["layers"].values())


def test_energy_latency_per_inference(digits):
    sim = chip_section(digits, "loihi", {"image": CALIB["image"][:16]})["sanafe"]
    assert {"arch", "energy_uJ", "latency_ms", "by_class", "steps"} <= set(sim)
    assert sim["energy_uJ"] > 0 and sim["latency_ms"] > 0 and sim["samples"] == 16
    assert sum(sim["by_class"].values()) == pytest.approx(sim["energy_uJ"])
    assert sim["by_class"]["synapse"] > 0 and sim["by_class"]["network"] > 0
    assert sim["steps"] == pytest.approx(sum(v["steps"] for v in sim["layers"].values()))
    assert "ESTIMATE" in sim["basis"] and sim["arch"].startswith("loihi")
    assert sim["lava_neuro_cores"] == digits.program("lava").plan["mapping"]["neuro_cores"]
    assert sim["cores"] >= sim["lava_neuro_cores"]


def test_chunked_layers_add_up(digits):
    """A layer simulated in core-aligned chunks counts the same events and energy as whole."""
    from sbcompile.chip import simulate

    program = digits.program("lava")
    feeds = {"image": CALIB["image"][:8]}
    counts = spike_traffic(digits.graph, feeds, program)
    whole = simulate(program, counts, 8)
    split = simulate(program, counts, 8, chunk_synapses=1)
    assert split["events"]["synaptic_ops"] == whole["events"]["synaptic_ops"]
    assert split["events"]["spike_messages"] == whole["events"]["spike_messages"]
    assert split["energy_uJ"] == pytest.approx(whole["energy_uJ"], rel=1e-9)


def test_report_command_chip(tmp_path):
    from click.testing import CliRunner

    from sbcompile.cli import main

    art = tmp_path / "d.sbc"
    r = CliRunner().invoke(main, ["compile", str(EXAMPLE / "model.onnx"), "--calib",
                                  str(EXAMPLE / "calib.npz"), "-o", str(art)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["report", str(art), "--chip", "loihi"])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1].startswith("error: --chip")
    np.savez(tmp_path / "x.npz", image=CALIB["image"][:8])
    r = CliRunner().invoke(main, ["report", str(art), "--chip", "loihi", "--input",
                                  str(tmp_path / "x.npz"), "--json", str(tmp_path / "r.json"),
                                  "--html", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["chip"]["sanafe"]["energy_uJ"] > 0 and set(rep["energy"]) >= {"loihi2018"}
    assert rep["chip"]["mapping"]["neuro_cores"] == rep["chip"]["sanafe"]["lava_neuro_cores"]
    assert "chip model estimate" in r.output
    page = (tmp_path / "r.html").read_text()
    assert "<b>sanafe loihi</b>" in page and "SANA-FE nJ" in page


@pytest.mark.parametrize("op, weight_shape, attrs, in_shape, parts", [
    ("spike_linear", (6, 8), {"group_size": 4}, (), 2),
    ("spike_conv", (6, 2, 3, 3), {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2],
                                  "group": 2}, (4, 7, 9), 3),
    ("spike_conv", (4, 3, 5), {"strides": [1], "pads": [2, 2], "dilations": [1], "group": 1},
     (3, 6), 1),
])
def test_synapse_list_is_the_geometry(op, weight_shape, attrs, in_shape, parts):
    """The explicit synapses SANA-FE gets: as many as the geometry counts, each input neuron's
    fan-out the geometry's, each accumulator neuron one partial row's slice of entries, each
    weight index the tap the dense convolution applies."""
    from sbcompile.chip import synapse_list
    from sbcompile.runtime.lava.connectivity import layer_geometry

    geometry = layer_geometry(op, weight_shape, attrs, in_shape)
    src, dst, windex = synapse_list(geometry, parts)
    assert src.size == geometry.synapses()
    np.testing.assert_array_equal(np.bincount(src, minlength=geometry.cols), geometry.fan_out())
    assert dst.max() < geometry.rows * parts and np.all(np.diff(dst) >= 0)
    assert len(set(zip(src.tolist(), dst.tolist()))) == src.size  # no synapse twice
    rng = np.random.default_rng(0)
    w = rng.integers(-5, 6, weight_shape)
    x = rng.integers(-3, 4, geometry.cols)
    partial = np.zeros(geometry.rows * parts, dtype=np.int64)
    np.add.at(partial, dst, w.reshape(-1)[windex] * x[src])
    assert partial.sum() == _dense_output(op, w, x, attrs, in_shape, geometry).sum()


def _dense_output(op, w, x, attrs, in_shape, geometry):
    import torch

    if op == "spike_linear":
        k = w.shape[1]
        return np.einsum("nk,k->n", w, x) if k == geometry.row_entries else \
            np.concatenate([w[:, s:s + geometry.row_entries] @ x[s:s + geometry.row_entries]
                            for s in range(0, k, geometry.row_entries)])
    nd = len(in_shape) - 1
    pads = attrs["pads"]
    xt = torch.nn.functional.pad(torch.from_numpy(x.reshape(in_shape)).double()[None],
                                 [p for i in reversed(range(nd)) for p in (pads[i], pads[nd + i])])
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d}[nd]
    return conv(xt, torch.from_numpy(w).double(), stride=attrs["strides"],
                dilation=attrs["dilations"], groups=attrs["group"]).numpy()
