"""`inspect` always shows the whole op table (supported column, reasons for what is not, all at
once; exit 2 when anything is unsupported) and counts each initializer once; `--input-shape`
pins dynamic dims for inspect and compile."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from sbcompile.artifact import Artifact
from sbcompile.cli import main, parse_input_shapes
from sbcompile.errors import SbcError

RNG = np.random.default_rng(3)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _shared_weight_model(path, extra_nodes=(), opset=17, size=16):
    """One weight read by three MatMuls (an unrolled recurrence shares its weights so)."""
    w = numpy_helper.from_array(RNG.standard_normal((size, size)).astype(np.float32), "w")
    nodes = [h.make_node("MatMul", ["x", "w"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
             h.make_node("MatMul", ["b", "w"], ["c"]), h.make_node("Tanh", ["c"], ["d"]),
             h.make_node("MatMul", ["d", "w"], ["y0"]), *extra_nodes]
    out = "y1" if extra_nodes else "y0"
    graph = h.make_graph(nodes, "shared", [h.make_tensor_value_info("x", T.FLOAT, [-1, size])],
                         [h.make_tensor_value_info(out, T.FLOAT, [-1, size])], [w])
    imports = [h.make_opsetid("", opset), h.make_opsetid("com.example", 1)]
    onnx.save(h.make_model(graph, opset_imports=imports, ir_version=8), path)
    return path


def test_inspect_counts_each_initializer_once(tmp_path):
    r = invoke("inspect", _shared_weight_model(tmp_path / "m.onnx"))
    assert r.exit_code == 0, r.output
    assert "256 parameters" in r.output
    assert "IR ops:" in r.output


def test_inspect_shows_the_whole_table_and_exits_2(tmp_path):
    unknown = [h.make_node("Frobnicate", ["y0"], ["z"], domain="com.example", name="frob"),
               h.make_node("Relu", ["z"], ["y1"], name="after")]
    r = invoke("inspect", _shared_weight_model(tmp_path / "m.onnx", unknown))
    assert r.exit_code == 2
    lines = r.output.splitlines()
    assert lines[-1].startswith("error: ") and "Frobnicate" in lines[-1]
    assert "of 7 nodes unsupported" in lines[-1]
    table = "\n".join(lines[:-1])
    for op in ("MatMul", "Relu", "Tanh", "Frobnicate"):
        assert op in table  # supported and unsupported ops, all shown
    assert "com.example" in table and "is not supported" in table  # the reason
    assert "Traceback" not in r.output


def test_inspect_upgrades_an_old_opset(tmp_path):
    r = invoke("inspect", _shared_weight_model(tmp_path / "m.onnx", opset=11))
    assert r.exit_code == 0, r.output


def test_input_shape_pins_dims_for_inspect_and_compile(tmp_path):
    model = _shared_weight_model(tmp_path / "m.onnx")
    r = invoke("inspect", model, "--input-shape", "x=4,16")
    assert r.exit_code == 0 and "float32[4, 16]" in r.output, r.output
    out = tmp_path / "m.sbc"
    r = invoke("compile", model, "--input-shape", "x=4,16", "-o", out)
    assert r.exit_code == 0, r.output
    assert Artifact.load(out).graph.values["x"].shape == (4, 16)


@pytest.mark.parametrize("bad, says", [("x", "expected NAME=D0"), ("x=4,", "expected NAME=D0"),
                                        ("x=0,16", "dims must be >= 1")])
def test_bad_input_shape_is_one_error_line(tmp_path, bad, says):
    r = invoke("compile", _shared_weight_model(tmp_path / "m.onnx"), "--input-shape", bad,
               "-o", tmp_path / "m.sbc")
    assert r.exit_code == 2 and says in r.output.splitlines()[-1]
    assert not (tmp_path / "m.sbc").exists()


def test_input_shape_contradicting_the_model(tmp_path):
    r = invoke("compile", _shared_weight_model(tmp_path / "m.onnx"), "--input-shape", "x=4,8",
               "-o", tmp_path / "m.sbc")
    assert r.exit_code == 2 and "contradicts" in r.output.splitlines()[-1]


def test_parse_input_shapes_keeps_dynamic_dims():
    assert parse_input_shapes(["x=-1,3,48,320", "h=batch,2"]) == {
        "x": ["x_dim0", 3, 48, 320], "h": ["batch", 2]}
    with pytest.raises(SbcError):
        parse_input_shapes(["=1"])


def test_shared_weight_stays_one_parameter_through_compile(tmp_path):
    """A weight read by three MatMuls is one IR parameter and one int8 copy; the artifact (float
    baseline + int8 weights for the graph, Lava and Triton) stays under 2x the model file (it
    was one float and one int8 copy per use)."""
    import os

    from sbcompile.pipeline import compile_model, load_model

    path = _shared_weight_model(tmp_path / "m.onnx", size=256)
    assert load_model(path).param_count() == 256 * 256
    art = compile_model(path, "spikingbrain",
                        calib={"x": RNG.standard_normal((8, 256)).astype(np.float32)})
    int8 = [p for p in art.graph.params.values() if p.dtype == np.int8]
    assert len(int8) == 1 and int8[0].shape == (256, 256)
    art.save(tmp_path / "m.sbc")
    assert os.path.getsize(tmp_path / "m.sbc") < 2 * os.path.getsize(path)


def test_inspect_prints_names_as_data(tmp_path):
    """Names that read as rich markup (`[/]`, `[bold]`) are printed as they are, not parsed."""
    nodes = [h.make_node("Relu", ["[x/]"], ["[bold]a"], name="[/]"),
             h.make_node("NoSuchOp", ["[bold]a"], ["y[/y]"], name="[/]b", domain="[red]d")]
    graph = h.make_graph(nodes, "[/]", [h.make_tensor_value_info("[x/]", T.FLOAT, [2, 4])],
                         [h.make_tensor_value_info("y[/y]", T.FLOAT, [2, 4])])
    imports = [h.make_opsetid("", 17), h.make_opsetid("[red]d", 1)]
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(graph, opset_imports=imports, ir_version=8), path)
    r = invoke("inspect", path)
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output
    for name in ("[/]: 2 ONNX nodes", "input [x/]", "output y[/y]", "NoSuchOp"):
        assert name in r.output, r.output
