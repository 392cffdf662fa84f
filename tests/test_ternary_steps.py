"""The `ternary` preset as SpikingBrain and ST-BIF mean it: signed counts sent as T steps of
{-1, 0, +1} spikes, T chosen per layer by calibration (at most t_max = 8), on a PReLU CNN built
here (signed activations, so both spike signs occur) that the calibration rule was not tuned on.
Counts and accumulators are exact on Lava and the Triton interpreter; `--set max_count=1` is the
one-step form; out-of-range T settings are one-line errors with exit 2."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import sbcompile
from sbcompile.demo import EXAMPLE
from sbcompile.errors import SbcError
from sbcompile.ir.codings import decode, expand
from sbcompile.ir.records import expansions

RNG = np.random.default_rng(12)


def prelu_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.MaxPool2d(2),
                         nn.Conv2d(8, 12, 3), nn.PReLU(12), nn.Flatten(),
                         nn.Linear(12 * 2 * 2, 16), nn.PReLU(16), nn.Linear(16, 4)).eval()


@pytest.fixture(scope="module")
def data():
    x = RNG.standard_normal((96, 3, 8, 8)).astype(np.float32)
    return {"x": x[:64]}, {"x": x[64:]}


@pytest.fixture(scope="module")
def compiled(data):
    calib, _ = data
    module = prelu_cnn()
    return {form: sbcompile.compile(module, (torch.from_numpy(calib["x"][:2]),),
                                    preset="ternary", calib=calib, overrides=overrides,
                                    input_names=["x"])
            for form, overrides in (("steps", None), ("one_step", {"max_count": "1"}))}


def _cosine(model, feeds) -> float:
    """Cosine of the spiked logits to the float ones, over the held-out inputs."""
    out = model.output_names[0]
    a = model.run(feeds).outputs[out].ravel().astype(np.float64)
    b = model.run(feeds, use_float=True).outputs[out].ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_calibration_chooses_T_per_layer_and_records_it(compiled, data):
    model = compiled["steps"]
    encoders = [n for n in model.graph.nodes if n.op == "spike_encode"]
    bounds = {n.outputs[0]: n.attrs["max_count"] for n in encoders}
    assert all(1 <= t <= 8 for t in bounds.values()) and max(bounds.values()) > 1
    assert {c: e.T for c, e in expansions(model.graph).items()} == bounds  # unary: T = bound
    for layer in model.report["layers"]:
        s = layer["sparsity"]
        assert s["coding"] == "ternary" and 1 <= s["T"] <= s["T_max"] <= 8
    # the counts a layer receives are exactly T_max steps of {-1, 0, +1} spikes
    result = model.run(data[1])
    for counts_name, bound in bounds.items():
        counts = result.counts[counts_name]
        assert np.abs(counts).max() <= bound and counts.min() < 0 < counts.max()
        events = expand(counts, "ternary", T=bound)
        assert events.shape[0] == bound and set(np.unique(events)) <= {-1, 0, 1}
        np.testing.assert_array_equal(decode(events, "ternary"), counts)


def test_steps_stay_closer_to_float_than_the_one_step_form(compiled, data):
    steps, one = _cosine(compiled["steps"], data[1]), _cosine(compiled["one_step"], data[1])
    assert steps >= 0.98 and steps > one


def test_one_step_form_is_max_count_1(compiled, data):
    model = compiled["one_step"]
    assert {n.attrs["max_count"] for n in model.graph.nodes if n.op == "spike_encode"} == {1}
    assert all(layer["sparsity"]["T_max"] == 1 for layer in model.report["layers"])
    counts = model.run(data[1]).counts
    spikes = [counts[n.outputs[0]] for n in model.graph.nodes if n.op == "spike_encode"]
    assert all(set(np.unique(s)) <= {-1, 0, 1} for s in spikes)  # one step of ternary spikes
    assert set(np.unique(spikes[0])) == {-1, 0, 1}


# Triton's interpreter mode is fixed at its first import: it runs in a child process
TRITON_CHILD = """
import sys, numpy as np, sbcompile
model = sbcompile.load(sys.argv[1])
got = model.run(dict(np.load(sys.argv[2])), "triton", interpret=True)
np.savez(sys.argv[3], **{"counts/" + k: v for k, v in got.counts.items()},
         **{"outputs/" + k: v for k, v in got.outputs.items()})
"""


def _on_triton_interpreter(model, feeds, tmp_path):
    import os

    model.save(tmp_path / "m.sbc")
    np.savez(tmp_path / "x.npz", **feeds)
    subprocess.run([sys.executable, "-c", TRITON_CHILD, str(tmp_path / "m.sbc"),
                    str(tmp_path / "x.npz"), str(tmp_path / "y.npz")], check=True, timeout=600,
                   env={**os.environ, "TRITON_INTERPRET": "1"})
    with np.load(tmp_path / "y.npz") as y:
        split = {kind: {k.split("/", 1)[1]: y[k] for k in y.files if k.startswith(kind)}
                 for kind in ("counts", "outputs")}
    return split["counts"], split["outputs"]


@pytest.mark.parametrize("target", ["lava", "triton"])
def test_steps_are_exact_on_lava_and_triton(compiled, data, target, tmp_path):
    model = compiled["steps"]
    feeds = {"x": data[1]["x"][:3]}
    want = model.run(feeds)
    if target == "lava":
        got = model.run(feeds, "lava", timeout=240)
        counts, outputs = got.counts, got.outputs
    else:
        counts, outputs = _on_triton_interpreter(model, feeds, tmp_path)
    assert want.counts and set(want.counts) <= set(counts)
    for name, value in want.counts.items():  # counts and integer accumulators
        np.testing.assert_array_equal(counts[name], value, err_msg=name)
    out = model.output_names[0]
    np.testing.assert_allclose(outputs[out], want.outputs[out], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("setting,message", [
    ("t_max=0", "t_max must be in 1..127, got 0"),
    ("t_max=200", "t_max must be in 1..127, got 200"),
    ("max_count=0", "max_count must be >= 1, got 0"),
    ("t_snr_db=-3", "t_snr_db must be > 0, got -3.0")])
def test_out_of_range_T_is_a_one_line_error(tmp_path, setting, message):
    from sbcompile.config import make_config

    with pytest.raises(SbcError, match=message.replace(".", "\\.")):
        make_config("ternary", dict([setting.split("=")]))
    proc = subprocess.run([sys.executable, "-m", "sbcompile", "compile",
                           str(EXAMPLE / "model.onnx"), "--calib", str(EXAMPLE / "calib.npz"),
                           "--preset", "ternary", "--set", setting, "-o",
                           str(tmp_path / "out.sbc")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "out.sbc").exists()
