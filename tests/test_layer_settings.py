"""Per-layer settings (``CompileConfig.layers``): the first matching pattern wins, each layer's
encoder is built from its own settings, the config round-trips through JSON, the artifact and
``compile --config``, bad entries are one-line errors naming the pattern and key, and a model
compiled with mixed settings runs bit-exact on Lava and the Triton interpreter (the Triton part
in a child process with TRITON_INTERPRET=1, see test_triton_runtime)."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from sbcompile.artifact import Artifact
from sbcompile.config import CompileConfig, config_from_file, layer_settings, make_config
from sbcompile.errors import SbcError
from sbcompile.npz import save_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime.reference import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from exactness import (assert_lava_matches_reference, assert_triton_matches_reference,  # noqa: E402
                        run_interpreter_child)
from models import build_bert, build_mlp  # noqa: E402

CHILD = os.environ.get("TRITON_INTERPRET") == "1"
# node_linear static 15-level percentile, node_linear_1 a fixed threshold, node_linear_2 float
MIXED = {"node_linear": {"policy": "static", "max_count": 15, "calib_method": "percentile",
                         "percentile": 99.9},
         "node_linear_1": {"policy": "static", "max_count": 7, "threshold": 0.05},
         "node_linear_*": {"float": True}}


@pytest.fixture(scope="module")
def mixed():
    zoo = build_mlp()
    overrides = {"k": "2.5", "layers": json.dumps(MIXED)}
    return zoo, compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs,
                              overrides=overrides)


def _encoder(art, layer):
    name = art.graph.meta["layers"][layer]["encoder"]
    return next(n for n in art.graph.nodes if n.name == name)


@pytest.mark.skipif(CHILD, reason="parent only")
def test_first_match_wins_and_exclude_is_float():
    cfg = make_config("spikingbrain", {"layers": json.dumps(
        {"conv2*": {"k": 4.0}, "conv*": {"k": 1.5}, "fc3": {"float": True}})}, exclude=["fc1"])
    assert layer_settings(cfg, "conv2a").k == 4.0
    assert layer_settings(cfg, "conv1").k == 1.5
    assert layer_settings(cfg, "fc2").k == 3.0 and not layer_settings(cfg, "fc2").float
    assert layer_settings(cfg, "fc3").float and layer_settings(cfg, "fc1").float


@pytest.mark.skipif(CHILD, reason="parent only")
def test_each_encoder_follows_its_layer(mixed):
    zoo, art = mixed
    assert [layer["name"] for layer in art.report["layers"]] == ["node_linear", "node_linear_1"]
    first, second = _encoder(art, "node_linear"), _encoder(art, "node_linear_1")
    assert first.attrs["policy"] == "static" and first.attrs["max_count"] == 15
    assert second.attrs["max_count"] == 7
    assert float(art.graph.params[second.inputs[1]]) == np.float32(0.05)  # fixed, not calibrated
    assert any(n.op == "linear" and n.name == "node_linear_2" for n in art.graph.nodes)
    counts = evaluate(art.graph, zoo.eval_inputs, keep=[first.outputs[0], second.outputs[0]])
    assert np.abs(counts[first.outputs[0]]).max() <= 15
    assert np.abs(counts[second.outputs[0]]).max() <= 7
    # the percentile clip differs from the mse one the preset's own static layers would get
    mse = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs, overrides={
        "layers": json.dumps({"node_linear": {**MIXED["node_linear"], "calib_method": "mse"}})})
    assert art.graph.params[first.inputs[1]] != mse.graph.params[_encoder(mse, "node_linear")
                                                                  .inputs[1]]


@pytest.mark.skipif(CHILD, reason="parent only")
def test_config_round_trips_through_json_artifact_and_config_file(mixed, tmp_path):
    zoo, art = mixed
    cfg = CompileConfig.from_json(art.config)
    assert cfg.layers == MIXED and list(cfg.layers) == list(MIXED)  # order kept: first wins
    art.save(tmp_path / "m.sbc")
    assert Artifact.load(tmp_path / "m.sbc").config == art.config
    (tmp_path / "cfg.json").write_text(json.dumps(art.config))
    again = compile_model(zoo.onnx_bytes(), calib=zoo.inputs,
                          config=config_from_file(tmp_path / "cfg.json"))
    for layer in ("node_linear", "node_linear_1"):
        np.testing.assert_array_equal(art.graph.params[_encoder(art, layer).inputs[1]],
                                      again.graph.params[_encoder(again, layer).inputs[1]])
    assert again.report["outputs_fidelity"] == art.report["outputs_fidelity"]


@pytest.mark.skipif(CHILD, reason="parent only")
def test_cli_compile_reads_the_config_file(tmp_path):
    from click.testing import CliRunner

    from sbcompile.cli import main

    zoo = build_mlp()
    model, calib = tmp_path / "m.onnx", tmp_path / "c.npz"
    model.write_bytes(zoo.onnx_bytes())
    save_npz(calib, zoo.inputs)
    (tmp_path / "cfg.json").write_text(json.dumps({"preset": "loihi2",
                                                   "layers": {"node_linear_2": {"float": True}}}))
    out = tmp_path / "m.sbc"
    r = CliRunner().invoke(main, ["compile", str(model), "--calib", str(calib), "--config",
                                  str(tmp_path / "cfg.json"), "--set", "max_count=31", "-o",
                                  str(out)])
    assert r.exit_code == 0, r.output
    cfg = Artifact.load(out).config
    assert cfg["preset"] == "loihi2" and cfg["max_count"] == 31
    assert cfg["layers"] == {"node_linear_2": {"float": True}}
    assert [layer["name"] for layer in Artifact.load(out).report["layers"]] == \
        ["node_linear", "node_linear_1"]


BAD = [({"layers": {"fc*": {"kk": 1}}}, "layers['fc*']: unknown key 'kk'"),
       ({"layers": {"fc*": {"k": -1}}}, "layers['fc*']: k must be > 0"),
       ({"layers": {"fc*": {"k": "big"}}}, "layers['fc*'].k: expected float"),
       ({"layers": {"fc*": {"max_count": 2.5}}}, "layers['fc*'].max_count: expected int"),
       ({"layers": {"fc*": {"policy": "static", "calib_method": "percentile"}}},
        "layers['fc*']: calib_method=percentile needs max_count"),
       ({"layers": {"fc*": {"t_max": 9.5}}}, "layers['fc*'].t_max: expected int"),
       ({"layers": {"fc*": {"t_max": 0}}}, "layers['fc*']: t_max must be in 1..127"),
       ({"layers": {"fc*": {"threshold": 0.1}}}, "layers['fc*'].threshold: a fixed threshold"),
       ({"layers": {"fc*": {"policy": "static", "max_count": 3, "threshold": -1}}},
        "layers['fc*'].threshold: must be > 0"),
       ({"layers": {"fc*": 3}}, "layers['fc*']: expected an object"),
       ({"layers": [1]}, "layers: expected dict"),
       ({"kk": 1}, "unknown config field 'kk'")]


@pytest.mark.skipif(CHILD, reason="parent only")
@pytest.mark.parametrize("data,message", BAD)
def test_bad_entries_are_one_line_errors(data, message, tmp_path):
    from click.testing import CliRunner

    from sbcompile.cli import main

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SbcError, match=message.replace("[", r"\[").replace("*", r"\*")):
        config_from_file(path)
    out = tmp_path / "m.sbc"
    r = CliRunner().invoke(main, ["compile", str(tmp_path / "missing.onnx"), "--config",
                                  str(path), "-o", str(out)])
    assert r.exit_code == 2 and not out.exists()
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), r.output


@pytest.mark.skipif(CHILD, reason="parent only")
def test_shared_encoder_with_differing_settings_is_refused():
    zoo = build_bert()
    art = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs)
    enc = {}
    for name, layer in art.graph.meta["layers"].items():
        enc.setdefault(layer["encoder"], []).append(name)
    shared = next(names for names in enc.values() if len(names) > 1)  # q, k, v
    a, b = shared[:2]
    with pytest.raises(SbcError, match="read one spiked input.*differ in k") as e:
        compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs,
                      overrides={"layers": json.dumps({b: {"k": 5.0}})})
    assert f"'{b}'" in str(e.value)
    same = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs,
                         overrides={"layers": json.dumps({n: {"k": 5.0} for n in shared})})
    assert _encoder(same, a).attrs["k"] == 5.0


@pytest.mark.skipif(CHILD, reason="parent only")
def test_mixed_settings_lava_equals_reference_bit_for_bit(mixed):
    zoo, art = mixed
    assert_lava_matches_reference(art.graph, zoo.eval_inputs, "logits")


@pytest.mark.skipif(CHILD, reason="this is the child")
def test_triton_interpreter_in_a_child():
    run_interpreter_child(__file__, "triton_equals", passed=1)


@pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process")
def test_mixed_settings_triton_equals_reference_bit_for_bit(mixed):
    zoo, art = mixed
    assert_triton_matches_reference(art.graph, zoo.eval_inputs, "logits")
