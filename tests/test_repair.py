"""Task accuracy by default: with calibration data, `sbcompile compile` measures the worst output
cosine and, below ``repair_floor`` (0.99 unless the user chose the spiking settings), repairs the
per-layer settings within ``repair_seconds``; float only for layers the introduced-error ranking
names."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from sbcompile.pipeline import compile_model
from sbcompile.tune import worst_cosine


def _deep_tanh(layers: int = 8, width: int = 24) -> onnx.ModelProto:
    """x -> (MatMul -> Tanh) x layers: error compounds through the stack."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        inits.append(numpy_helper.from_array(
            rng.normal(0, 1.3 / np.sqrt(width), (width, width)).astype(np.float32), f"w{i}"))
        nodes += [h.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  h.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        x = f"t{i}"
    graph = h.make_graph(nodes, "deep", [h.make_tensor_value_info("x", T.FLOAT, ["N", width])],
                         [h.make_tensor_value_info(x, T.FLOAT, ["N", width])], inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


# heavy-tailed inputs: a per-tensor static threshold clips or wastes levels on them
X = np.random.default_rng(1).standard_t(1.5, (64, 24)).astype(np.float32)


@pytest.mark.parametrize("preset", ["spikingbrain", "loihi2"])
def test_below_the_floor_compile_repairs_by_default(preset):
    off = compile_model(_deep_tanh(), preset, calib={"x": X}, overrides={"targets": ""})
    assert worst_cosine(off.graph) < 0.99 and "tune" not in off.report
    art = compile_model(_deep_tanh(), preset, calib={"x": X},
                        overrides={"targets": "", "repair_floor": "0.99"})
    assert worst_cosine(art.graph) >= 0.99
    search = art.report["tune"]
    assert search["floor"] == 0.99 and search["untuned"]["metric"] < 0.99
    ranking = [r["layer"] for r in sorted(search["sensitivity"], key=lambda r: -r["metric_lost"])]
    assert all(r["measured"] == "introduced cosine" for r in search["sensitivity"])
    floated = [name for name, entry in search["layers"].items() if entry.get("float")]
    assert set(floated) <= set(ranking[:len(floated)])  # only the worst introducers float
    assert len(floated) <= 1
    assert art.config["layers"] == search["layers"]


def test_a_model_that_holds_the_floor_is_left_as_the_preset_compiles_it():
    x = np.random.default_rng(2).normal(0, 1, (64, 24)).astype(np.float32)
    art = compile_model(_deep_tanh(layers=2), "loihi2", calib={"x": x},
                        overrides={"targets": "", "repair_floor": "0.99"})
    assert worst_cosine(art.graph) >= 0.99
    assert "tune" not in art.report and art.config["layers"] == {}


def test_without_calibration_data_nothing_is_measured_or_repaired():
    art = compile_model(_deep_tanh(), "spikingbrain",
                        overrides={"targets": "", "repair_floor": "0.99"})
    assert "tune" not in art.report


@pytest.mark.parametrize("sets, repaired", [(["targets="], True), (["max_count=7"], False)])
def test_the_compile_command_repairs_unless_the_settings_were_chosen(tmp_path, sets, repaired):
    """`--set targets=` chooses no spiking setting: repaired; `--set max_count=7` does: the
    compile keeps the user's settings as given."""
    from click.testing import CliRunner

    from sbcompile.api import load
    from sbcompile.cli import main

    onnx.save(_deep_tanh(), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=X)
    args = ["compile", str(tmp_path / "m.onnx"), "--preset", "loihi2", "--calib",
            str(tmp_path / "calib.npz"), "-o", str(tmp_path / "m.sbc")]
    for item in sets:
        args += ["--set", item]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    report = load(tmp_path / "m.sbc").report
    assert ("tune" in report) == repaired
    assert (worst_cosine(load(tmp_path / "m.sbc").graph) >= 0.99) == repaired
