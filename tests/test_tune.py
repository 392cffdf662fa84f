"""The tune search on models it was not developed on (the zoo's CNN and MLP): it meets its floor
at no more cost than the settings it started from, the config it writes compiles through
`compile --config` to the same numbers, `compile --set fidelity_floor=` runs the same search, and
bad inputs are one-line errors that write nothing."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sbcompile.artifact import Artifact
from sbcompile.cli import main
from sbcompile.config import config_from_file, make_config
from sbcompile.errors import SbcError
from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.npz import save_npz
from sbcompile.passes.energy import dense_mac_price
from sbcompile.pipeline import compile_graph
from sbcompile.tune import pareto_front, tune

sys.path.insert(0, str(Path(__file__).parent))
from models import build_cnn, build_mlp  # noqa: E402


@pytest.fixture(scope="module")
def cnn():
    zoo = build_cnn()
    rng = np.random.default_rng(7)
    calib = {"x": rng.normal(size=(24, 1, 9, 9)).astype(np.float32)}  # 12 batches of 2
    return load_onnx(zoo.onnx_bytes()), calib


@pytest.fixture
def files(tmp_path):
    zoo = build_mlp()
    rng = np.random.default_rng(3)
    model, calib = tmp_path / "mlp.onnx", tmp_path / "calib.npz"
    model.write_bytes(zoo.onnx_bytes())
    save_npz(calib, {"x": rng.normal(size=(64, 16)).astype(np.float32)})
    return tmp_path, model, calib


def _float_classes(model: Path, x: dict) -> np.ndarray:
    """The float model's argmax per calibration sample (the MLP takes batches of 8)."""
    from sbcompile.runtime.reference import run

    graph = load_onnx(model.read_bytes())
    return np.concatenate([run(graph, {"x": x["x"][i:i + 8]})["logits"].argmax(-1)
                           for i in range(0, len(x["x"]), 8)])


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("preset,metric,floor,per_layer", [
    ("spikingbrain", "cosine", 0.995, True), ("loihi2", "agreement", 0.95, True),
    ("spikingbrain", "cosine", 0.995, False)])  # False: the many-layer path (ranked prefixes)
def test_tune_meets_the_floor_cheaper_than_its_start(cnn, preset, metric, floor, per_layer,
                                                     monkeypatch):
    import sbcompile.tune

    if not per_layer:
        monkeypatch.setattr(sbcompile.tune, "PER_LAYER_LIMIT", 1)
    graph, calib = cnn
    result = tune(graph, make_config(preset), calib, metric, floor)
    assert all(r["measured"] == ("probe at the cheapest rung" if per_layer else
                                 "introduced cosine") for r in result.ranking)
    assert result.chosen.metric >= floor and result.chosen.feasible
    start = result.trials[0]
    assert result.chosen.cost <= start.cost
    assert result.chosen in pareto_front(result.trials) or any(
        t.metric >= result.chosen.metric and t.cost <= result.chosen.cost
        for t in pareto_front(result.trials))
    # bounded: start, a probe per encoder, bisections, the untuned preset; never exhaustive
    knobs = len(result.ranking)
    assert len(result.trials) <= 2 + knobs * (1 + 4 + 3) + knobs
    # the chosen config compiles to the measured numbers (count bounds clip nothing there)
    art = compile_graph(graph, result.config, calib)
    fid = art.report["outputs_fidelity"]["probs"]
    assert fid["cosine" if metric == "cosine" else "argmax_agreement"] == result.chosen.metric
    if preset == "loihi2":  # static: T (max_count) per layer; clips written as thresholds
        assert all(s.get("policy") == "static" or s.get("float") for s in
                   result.config.layers.values())


def test_cli_tune_config_round_trips_through_compile(files):
    tmp, model, calib = files
    cfg, rep = tmp / "tuned.json", tmp / "tune_report.json"
    r = _invoke("tune", model, "--calib", calib, "--budget", "0.998", "-o", cfg, "--json", rep,
                "--html", tmp / "tune.html")
    assert r.exit_code == 0, r.output
    tuned = json.loads(rep.read_text())["tune"]
    assert tuned["chosen"]["metric"] >= 0.998 and tuned["front"]
    assert "Pareto front" in (tmp / "tune.html").read_text()
    written = config_from_file(cfg)
    assert written.layers == tuned["layers"] and written.fidelity_floor is None
    out = tmp / "m.sbc"
    r = _invoke("compile", model, "--calib", calib, "--config", cfg, "-o", out)
    assert r.exit_code == 0, r.output
    report = Artifact.load(out).report
    assert report["outputs_fidelity"]["logits"]["cosine"] == tuned["chosen"]["metric"]
    spiked = {layer["name"] for layer in report["layers"]}
    floated = [name for name, s in tuned["layers"].items() if s.get("float")]
    assert not spiked & set(floated)
    float_pj = 0.0
    if floated:  # a float layer costs its dense MACs (as the untuned preset measures them)
        untuned = tmp / "untuned.sbc"
        assert _invoke("compile", model, "--calib", calib, "-o", untuned).exit_code == 0
        float_pj = sum(layer["ops"]["dense_macs"] for layer in
                       Artifact.load(untuned).report["layers"]
                       if layer["name"] in floated) * dense_mac_price("spikingbrain")
    assert report["energy"]["spikingbrain"]["spiking_pJ"] + float_pj == pytest.approx(
        tuned["chosen"]["energy_pJ"], rel=1e-12)


def test_compile_with_a_fidelity_floor_runs_the_search(files):
    tmp, model, calib = files
    out = tmp / "m.sbc"
    r = _invoke("compile", model, "--calib", calib, "--set", "fidelity_floor=0.99", "--set",
                "tune_objective=sparsity", "-o", out)
    assert r.exit_code == 0, r.output
    art = Artifact.load(out)
    assert art.report["tune"]["floor"] == 0.99
    assert art.report["tune"]["objective"] == "sparsity"
    assert art.config["fidelity_floor"] is None and art.config["layers"]
    assert art.report["outputs_fidelity"]["logits"]["cosine"] >= 0.99


@pytest.mark.parametrize("args,message", [
    (["--budget", "cosine=1.5"], "a cosine floor must be in (-1, 1]"),
    (["--budget", "agreement=0"], "a agreement floor must be in (0, 1]"),
    (["--budget", "loss=0.5"], "unknown metric 'loss'"),
    (["--budget", "cosine=high"], "the floor must be a number"),
    (["--budget", "accuracy=0.9"], "a task metric needs --labels"),
    (["--set", "fidelity_floor=2"], "fidelity_floor: a cosine floor must be in"),
    (["--objective", "speed"], "Invalid value for '--objective'"),
    (["--max-time", "0"], "must be a finite number of seconds > 0"),
])
def test_bad_inputs_are_one_line_errors(files, args, message):
    tmp, model, calib = files
    out = tmp / "tuned.json"
    r = _invoke("tune", model, "--calib", calib, *args, "-o", out)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output
    assert not out.exists()


def test_missing_calibration_and_labels_files(files):
    tmp, model, calib = files
    out = tmp / "tuned.json"
    r = _invoke("tune", model, "-o", out)
    assert r.exit_code == 2 and "--calib" in r.output and not out.exists()
    r = _invoke("tune", model, "--calib", tmp / "none.npz", "-o", out)
    assert r.exit_code == 2 and "none.npz: no such file" in r.output
    save_npz(tmp / "labels.npz", {"logits": np.zeros(5, np.int64)})
    r = _invoke("tune", model, "--calib", calib, "--budget", "accuracy=0.5", "--labels",
                tmp / "labels.npz", "-o", out)
    assert r.exit_code == 2 and "5 rows" in r.output and not out.exists()
    save_npz(tmp / "labels.npz", {"nope": np.zeros(64, np.int64)})
    r = _invoke("tune", model, "--calib", calib, "--budget", "accuracy=0.5", "--labels",
                tmp / "labels.npz", "-o", out)
    assert r.exit_code == 2 and "'nope' is not an output" in r.output


def test_unreachable_floor_names_the_best_reached_and_writes_nothing(files):
    tmp, model, calib = files
    from sbcompile.npz import load_npz

    predicted = _float_classes(model, load_npz(calib))
    wrong = (predicted + 1) % 10  # the float model gets every label wrong: floor unreachable
    wrong[:16] = predicted[:16]   # ... but a quarter right
    save_npz(tmp / "labels.npz", {"logits": wrong})
    out = tmp / "tuned.json"
    r = _invoke("tune", model, "--calib", calib, "--budget", "accuracy=0.5", "--labels",
                tmp / "labels.npz", "-o", out)
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert line.startswith("error: fidelity floor 0.5 (accuracy) is unreachable: the best "
                           "reached is") and "float model itself: 0.2500" in line, line
    assert not out.exists()


def test_task_metric_accuracy_with_labels(files):
    tmp, model, calib = files
    from sbcompile.npz import load_npz

    graph = load_onnx(model.read_bytes())
    x = load_npz(calib)
    labels = _float_classes(model, x)
    labels[:8] = (labels[:8] + 1) % 10  # the float model: 56 of 64 right
    result = tune(graph, make_config("spikingbrain"), x, "accuracy", 0.8,
                  labels={"logits": labels})
    assert result.float_metric == 56 / 64
    assert result.chosen.metric >= 0.8


def test_config_tune_fields_are_checked():
    with pytest.raises(SbcError, match="tune_metric must be one of cosine, agreement"):
        make_config("spikingbrain", {"tune_metric": "accuracy"})
    with pytest.raises(SbcError, match="tune_energy must be one of"):
        make_config("spikingbrain", {"tune_energy": "cheap"})
