"""The command line contract: commands work end to end; bad input gives one `error:` line, exit
2, no traceback and no output file."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sbcompile.cli import main
from sbcompile.demo import EXAMPLE

MODEL = str(EXAMPLE / "model.onnx")
CALIB = str(EXAMPLE / "calib.npz")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for frag in fragments:
        assert frag in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits.sbc"
    result = invoke("compile", MODEL, "--calib", CALIB, "--preset", "loihi2", "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_inspect_and_check():
    r = invoke("inspect", MODEL)
    assert r.exit_code == 0 and "conv" in r.output and "13,708 parameters" in r.output
    r = invoke("check", MODEL)
    assert r.exit_code == 0 and "10/10 nodes supported, 4 layers spiked" in r.output


def test_compile_report_run(compiled, tmp_path):
    r = invoke("report", compiled, "--json", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert r.exit_code == 0, r.output
    assert "<img src='data:image/png;base64," in (tmp_path / "r.html").read_text()
    held = np.load(EXAMPLE / "heldout.npz")
    np.savez(tmp_path / "x.npz", image=held["image"][:16])
    for extra in ([], ["--float"]):
        r = invoke("run", compiled, "--input", tmp_path / "x.npz", "-o", tmp_path / "y.npz",
                   *extra)
        assert r.exit_code == 0, r.output
        logits = np.load(tmp_path / "y.npz")["logits"]
        assert logits.shape == (16, 10)
        assert np.mean(logits.argmax(1) == held["label"][:16]) > 0.9


def test_bad_calibration_files(tmp_path):
    imgs = np.load(CALIB)["image"]
    cases = {
        "wrong_name.npz": ({"pixels": imgs}, "'pixels' is not an input"),
        "wrong_shape.npz": ({"image": imgs[:, :, :4]}, "'image' has shape"),
        "wrong_dtype.npz": ({"image": imgs.astype(np.complex64)}, "'image' has dtype"),
        "nan.npz": ({"image": np.where(imgs > 0.5, np.nan, imgs).astype(np.float32)},
                    "NaN"),
        "empty.npz": ({"image": imgs[:0]}, "no samples"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        out = tmp_path / f"{name}.sbc"
        r = invoke("compile", MODEL, "--calib", tmp_path / name, "-o", out)
        assert_user_error(r, message)
        assert not out.exists()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert_user_error(invoke("compile", MODEL, "--calib", tmp_path / "junk.npz", "-o",
                             tmp_path / "o.sbc"), "junk.npz")


@pytest.mark.parametrize("args,message", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--set", "colour=red"], "unknown --set key 'colour'"),
    (["--set", "k=0"], "k must be > 0"),
    (["--set", "k=-1"], "k must be > 0"),
    (["--set", "k=abc"], "--set k=abc"),
    (["--set", "max_count=0"], "max_count must be >= 1"),
    (["--set", "coding=morse"], "coding must be one of"),
    (["--set", "novalue"], "expected KEY=VALUE"),
    (["--preset", "ternary"], "pass calibration data"),
])
def test_bad_options(args, message, tmp_path):
    out = tmp_path / "o.sbc"
    assert_user_error(invoke("compile", MODEL, *args, "-o", out), message)
    assert not out.exists()


def test_bad_model_and_artifact_inputs(compiled, tmp_path):
    assert_user_error(invoke("compile", tmp_path / "missing.onnx", "-o", tmp_path / "o.sbc"),
                      "missing.onnx")
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(Path(MODEL).read_bytes()[:500])
    assert_user_error(invoke("inspect", truncated), "cut.onnx")
    broken = tmp_path / "broken.sbc"
    data = bytearray(Path(compiled).read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    assert_user_error(invoke("report", broken), "broken.sbc")
    np.savez(tmp_path / "x.npz", img=np.zeros((1, 1, 8, 8), np.float32))
    assert_user_error(invoke("run", compiled, "--input", tmp_path / "x.npz", "-o",
                             tmp_path / "y.npz"), "'img' is not an input")
    assert not (tmp_path / "y.npz").exists()
    assert_user_error(invoke("report", compiled, "--energy-preset", "nope"), "nope")


def test_real_process_exit_code_and_stderr(tmp_path):
    """Through the installed entry point: exit 2, one stderr line, nothing on stdout."""
    proc = subprocess.run([sys.executable, "-m", "sbcompile", "compile", MODEL, "--preset",
                           "nope", "-o", str(tmp_path / "o.sbc")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: unknown preset 'nope' (known: float, "
                                                "spikingbrain, ternary, loihi2, "
                                                "spikingbrain_kv8)"]


def _onnx_file(path, nodes, initializers=(), inputs=("x",), shape=(2, 4)):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info(i, TensorProto.FLOAT, list(shape))
                       for i in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def test_bad_models_at_the_command_line(tmp_path):
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nan_weight = numpy_helper.from_array(np.full((4, 3), np.nan, np.float32), "w")
    cases = {
        "unsupported.onnx": ([helper.make_node("Det", ["x"], ["y"], name="det0")], [],
                             "det0"),
        "missing_init.onnx": ([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm0")], [],
                              "'w'"),
        "nan.onnx": ([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm0")], [nan_weight],
                     "NaN"),
        "cycle.onnx": ([helper.make_node("Relu", ["x", ], ["a"], name="r0"),
                        helper.make_node("Add", ["a", "b"], ["c"], name="add0"),
                        helper.make_node("Relu", ["c"], ["b"], name="r1"),
                        helper.make_node("MatMul", ["b", "w"], ["y"], name="mm0")], [weight],
                       "cycle"),
    }
    for name, (nodes, inits, message) in cases.items():
        model = _onnx_file(tmp_path / name, nodes, inits)
        out = tmp_path / f"{name}.sbc"
        assert_user_error(invoke("compile", model, "-o", out), message)
        assert not out.exists()
    r = invoke("check", tmp_path / "unsupported.onnx")
    assert r.exit_code == 2 and "Det" in r.output and "unsupported" in r.output
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model")
    assert_user_error(invoke("check", text), "notes.onnx")


def test_export_onnx_qdq_runs_in_onnxruntime(compiled, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "digits_qdq.onnx"
    r = invoke("export", compiled, "--format", "onnx-qdq", "-o", out)
    assert r.exit_code == 0, r.output
    held = np.load(EXAMPLE / "heldout.npz")
    x = held["image"][:32]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": x})[0]
    ours = invoke("run", compiled, "--input", _npz(tmp_path / "x.npz", image=x), "-o",
                  tmp_path / "y.npz")
    assert ours.exit_code == 0
    np.testing.assert_allclose(logits, np.load(tmp_path / "y.npz")["logits"], rtol=1e-5,
                               atol=1e-5)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_every_target_runs_the_stored_programs(tmp_path):
    """The artifact carries Lava and Triton programs; all targets give the reference's logits."""
    from sbcompile.artifact import Artifact

    out = tmp_path / "digits.sbc"
    assert invoke("compile", MODEL, "--calib", CALIB, "-o", out).exit_code == 0
    assert {"lava/plan.json", "triton/plan.json"} <= set(Artifact.load(out).programs)
    x = _npz(tmp_path / "x.npz", image=np.load(EXAMPLE / "heldout.npz")["image"][:4])
    results = {}
    for target, extra in (("reference", []), ("lava", []), ("triton", ["--interpret"])):
        r = invoke("run", out, "--input", x, "--target", target, *extra, "-o",
                   tmp_path / f"{target}.npz")
        assert r.exit_code == 0, r.output
        results[target] = np.load(tmp_path / f"{target}.npz")["logits"]
    np.testing.assert_allclose(results["lava"], results["reference"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(results["triton"], results["reference"], rtol=1e-5, atol=1e-5)


def test_lava_op_counts_equal_the_compile_time_counts(tmp_path):
    """On the calibration inputs, the ops measured on the simulated chip are the report's."""
    from sbcompile.npz import load_npz
    from sbcompile.pipeline import compile_model
    from sbcompile.report import simulated_vs_compiled
    from sbcompile.runtime.targets import run_artifact

    calib = {"image": load_npz(CALIB)["image"][:24]}
    art = compile_model(MODEL, "loihi2", calib=calib)
    out = run_artifact(art, "lava", calib)
    rows = simulated_vs_compiled(out.op_counts, art.report, 24)
    assert len(rows) == 4
    for row in rows:
        for key in ("synaptic_ops", "spike_messages", "neuron_updates"):
            assert row[key]["simulated"] == row[key]["compile_time"] > 0, row
    x = _npz(tmp_path / "c.npz", **calib)
    art.save(tmp_path / "l.sbc")
    r = invoke("run", tmp_path / "l.sbc", "--input", x, "--target", "lava", "--timeout", "60")
    assert r.exit_code == 0 and "simulated vs compile-time" in r.output


def test_demo_runs_the_whole_path(tmp_path):
    r = invoke("demo", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "float accuracy 99.44%" in r.output
    assert "logits equal to the reference: True" in r.output.replace("\n", " ")
    assert (tmp_path / "digits_spikingbrain_report.html").is_file()
    assert (tmp_path / "digits_spikingbrain.sbc").is_file()


@pytest.mark.parametrize("settings", [["t_mode=token"], ["coding=ternary", "k=20"]])
def test_every_setting_writes_an_artifact_run_reads(settings, tmp_path):
    """The compile's own report passes the artifact schema: a mean T per token (t_mode token)
    and a unary coding's T above 64 (ternary, large counts) are valid steps."""
    sets = [a for s in settings for a in ("--set", s)]
    r = invoke("compile", MODEL, "--calib", CALIB, *sets, "--set", "targets=", "-o",
               tmp_path / "m.sbc")
    assert r.exit_code == 0, r.output
    np.savez(tmp_path / "x.npz", image=np.load(EXAMPLE / "heldout.npz")["image"][:4])
    r = invoke("run", tmp_path / "m.sbc", "--input", tmp_path / "x.npz")
    assert r.exit_code == 0, r.output


def test_report_plots_names_the_font_cannot_draw_without_warnings(tmp_path):
    """Layer names are data: a glyph missing from the plot font is drawn as a box, and the
    report writes nothing to stderr (matplotlib warns once per glyph and figure)."""
    import warnings

    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    from sbcompile.pipeline import compile_model
    from sbcompile.report_html import render_html

    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
              for s, n in (((8, 16), "w1"), ((4, 8), "w2")))
    nodes = [h.make_node("Gemm", ["x", "w1"], ["a"], name="层\u0001", transB=1),
             h.make_node("Relu", ["a"], ["b"]),
             h.make_node("Gemm", ["b", "w2"], ["y"], name="y\u0378", transB=1)]
    graph = h.make_graph(nodes, "glyphs", [h.make_tensor_value_info("x", T.FLOAT, [4, 16])],
                         [h.make_tensor_value_info("y", T.FLOAT, [4, 4])], [w1, w2])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    art = compile_model(model, "spikingbrain", calib={"x": rng.standard_normal((4, 16))
                                                       .astype(np.float32)},
                        overrides={"targets": ""})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = render_html(art.report)
    assert "层" in page and "<img" in page
    assert not [str(w.message) for w in caught], [str(w.message) for w in caught]
