"""The count density the analysis measures reaches Triton lowering (it sets how many count rows
take the event GEMV), and ``--set triton_density`` overrides it."""
import dataclasses
from pathlib import Path

import pytest

from sbcompile.backends.triton import DEFAULT_DENSITY, _event_rows, lower
from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime.targets import stored_program

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


@pytest.fixture(scope="module")
def digits():
    calib = {k: v[:64] for k, v in load_npz(DIGITS / "calib.npz").items()}
    return compile_model(DIGITS / "model.onnx", preset="spikingbrain", calib=calib,
                         overrides={"targets": "triton"})


def test_measured_density_sets_the_event_rows(digits):
    program = lower(digits.graph, CompileConfig.from_json(digits.config))
    measured = {layer["name"]: 1 - layer["sparsity"]["count_zero"]
                for layer in digits.report["layers"]}
    linears = {step.node: step for step in program.linears.values()}
    assert linears, "the digits CNN has spiked linear layers"
    checked = 0
    for name, info in digits.graph.meta["layers"].items():
        encoder = next((e for e in program.encodes.values()
                        if digits.graph.node(e.node).outputs[0] == info["counts"]), None)
        if encoder is None:
            continue
        assert encoder.event_max_rows == _event_rows(measured[name])
        assert encoder.density == pytest.approx(measured[name])
        checked += 1
    assert checked
    stored = stored_program(digits.programs, digits.graph, "triton")  # what the compile kept
    assert {e.node: e.event_max_rows for e in stored.encodes.values()} == \
        {e.node: e.event_max_rows for e in program.encodes.values()}
    assert any(abs(d - DEFAULT_DENSITY) > 0.01 for d in measured.values())  # not the default


def test_the_setting_overrides_the_measurement(digits):
    config = CompileConfig.from_json(digits.config)
    program = lower(digits.graph, dataclasses.replace(config, triton_density=0.3))
    assert {e.event_max_rows for e in program.encodes.values()} == {_event_rows(0.3)}
    stored = lower(digits.graph, config)
    assert {e.event_max_rows for e in stored.encodes.values()} != {_event_rows(0.3)}


def test_the_setting_is_checked():
    with pytest.raises(SbcError, match="triton_density"):
        compile_model(DIGITS / "model.onnx", overrides={"triton_density": "1.5"})
