"""Models compiled by the pipeline run on Lava's fixed-point Loihi 2 simulation: counts and acc
of every spike layer equal the reference interpreter bit for bit, outputs agree, and the op
counts measured from the simulated spikes equal the compile-time analysis, in every signalling
mode and both graph forms. Models: an MLP, the digits CNN and a BERT-style encoder."""
import sys
from pathlib import Path

import numpy as np
import pytest

from sbcompile.backends.lava import lower
from sbcompile.demo import EXAMPLE
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime.lava.opcounts import compare_with_report
from sbcompile.runtime.lava.runner import simulate
from sbcompile.runtime.reference import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from models import build_bert, build_mlp  # noqa: E402

# the preset whose coding each signalling mode carries (unary: short trains of up to 3 spikes)
PRESETS = {"graded": ("loihi2", None), "unary": ("ternary", {"max_count": "3"}),
           "bitwise": ("spikingbrain", None)}
SYNAPTIC_CLASS = {"graded": "int8_mac_graded", "unary": "signed_ac", "bitwise": "shift_add"}
# every model in every mode and form, except the BERT split form beyond graded (minutes per run)
CASES = [(model, mode, form) for model in ("mlp", "digits_cnn", "bert") for mode in PRESETS
         for form in ("fused", "split")
         if not (model == "bert" and form == "split" and mode != "graded")]


@pytest.fixture(scope="module")
def sources():
    mlp, bert = build_mlp(), build_bert()
    digits = {"image": load_npz(EXAMPLE / "calib.npz")["image"][:6]}
    return {"mlp": (mlp.onnx_bytes(), mlp.inputs), "digits_cnn": (EXAMPLE / "model.onnx", digits),
            "bert": (bert.onnx_bytes(), bert.inputs)}


@pytest.fixture(scope="module")
def compiled(sources):
    cache = {}

    def get(model: str, mode: str):
        if (model, mode) not in cache:
            onnx, feeds = sources[model]
            preset, overrides = PRESETS[mode]
            cache[model, mode] = compile_model(onnx, preset, calib=feeds, overrides=overrides)
        return cache[model, mode], sources[model][1]

    return get


@pytest.mark.parametrize("model,mode,form", CASES)
def test_lava_matches_reference_and_compile_time_counts(compiled, model, mode, form):
    art, feeds = compiled(model, mode)
    program = lower(art.graph)  # the mode follows the compiled coding
    assert program.mode == mode
    run = simulate(program, feeds, form=form, timeout=240)

    integer = [e["counts"] for e in program.plan["encoders"]]
    integer += [s["acc"] for s in program.plan["synapses"]]
    ref = evaluate(art.graph, feeds, keep=integer)
    for name in integer:
        assert run[name].dtype == np.int32
        np.testing.assert_array_equal(run[name], ref[name], err_msg=name)
    for name in art.graph.outputs:
        np.testing.assert_allclose(run[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)

    samples = art.report["calibration_samples"]
    layers = {layer["name"]: layer["ops"] for layer in art.report["layers"]}
    assert set(run.op_counts) == set(layers)
    for name, ops in layers.items():
        sim = run.op_counts[name]
        assert sim["synaptic_ops"] == round(ops[SYNAPTIC_CLASS[mode]] * samples), name
        assert sim["spike_messages"] == round(ops["spike_messages"] * samples), name
        assert sim["neuron_updates"] == round(ops["neuron_updates"] * samples), name
    comparison = compare_with_report(run.op_counts, art.report, mode)
    assert all(c["equal"] for layer in comparison.values() for c in layer.values())
    assert run.steps > 0
    assert run.compute_flops and all(v >= 0 for v in run.compute_flops.values())


def test_both_forms_agree_on_steps_they_should(compiled):
    """The split form pays one synaptic delay per layer and streams tokens; the fused form has
    neither, so it never needs more steps for the same program."""
    art, feeds = compiled("mlp", "bitwise")
    program = lower(art.graph)
    fused = simulate(program, feeds, form="fused")
    split = simulate(program, feeds, form="split")
    assert fused.steps <= split.steps
    for name in fused:
        np.testing.assert_array_equal(fused[name], split[name], err_msg=name)
    assert fused.op_counts == {k: {**v} for k, v in split.op_counts.items()}
