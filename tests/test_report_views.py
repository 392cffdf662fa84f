"""What a reader sees: the terminal report fits a narrow terminal (compact table, names elided in
the middle, numbers whole) and prints every column untruncated in a pipe; the HTML page opens on
its summary, labels every energy figure with its basis as an estimate, says why a basis prices
spiking above dense, and ends with the configuration."""
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from sbcompile.api import compile
from sbcompile.demo import EXAMPLE
from sbcompile.npz import load_npz
from sbcompile.report import elide_middle, print_terminal
from sbcompile.report_html import render_html


@pytest.fixture(scope="module")
def report():
    model = compile(EXAMPLE / "model.onnx", calib=load_npz(EXAMPLE / "calib.npz"),
                    overrides={"targets": []})
    rep = dict(model.report)
    # names as long as a real model's (the digits CNN's are short)
    for i, layer in enumerate(rep["layers"]):
        layer["name"] = f"encoder.blocks.{i}.attention.output_projection.{layer['name']}"
    return rep


def _render(report, width: int, terminal: bool) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal,
                      color_system=None)
    print_terminal(report, "loihi2018", console=console)
    return console.file.getvalue()


def test_narrow_terminal_gets_the_compact_table(report):
    out = _render(report, 80, terminal=True)
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "compact view at 80 columns" in out and "--html" in out
    for layer in report["layers"]:
        name = layer["name"]
        shown = [ln for ln in lines if ln.strip().startswith(name[:8])]
        row = next(ln for ln in shown if name[-6:] in ln)  # the middle is elided, not the end
        assert f"{layer['fidelity']['output']['cosine']:.4f}" in row
        assert f"{layer['sparsity']['count_zero']:.0%}" in row
        assert "\u2026" not in row.split(None, 1)[1]  # no number cut


def test_wide_terminal_gets_the_full_table(report):
    out = _render(report, 250, terminal=True)
    assert "compact view" not in out and "cos iso" in out and "own err" in out
    assert report["layers"][0]["name"] in out


def test_pipe_gets_every_column_whole(report):
    out = _render(report, 80, terminal=False)
    assert "\u2026" not in out and "compact view" not in out
    for layer in report["layers"]:
        row = next(ln for ln in out.splitlines() if ln.startswith(layer["name"] + " "))
        assert f"{layer['fan_in']}->{layer['fan_out']}" in row
        assert f"{layer['sparsity']['spike_slot']:.1%}" in row
    energy = next(ln for ln in out.splitlines() if ln.startswith("energy estimate"))
    assert "as much" in energy and "-" not in energy.split("(")[1]  # never '-1349.1 %'
    assert any(ln.startswith("spiking costs more on this basis") for ln in out.splitlines())


def test_cli_in_a_pipe(tmp_path):
    """`sbcompile compile` writing to a pipe: the plain layout, names and numbers whole."""
    out = subprocess.run([sys.executable, "-m", "sbcompile", "compile", str(EXAMPLE / "model.onnx"),
                          "--calib", str(EXAMPLE / "calib.npz"), "--set", "targets=",
                          "-o", str(tmp_path / "d.sbc")], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "60"}, check=True).stdout
    assert "\u2026" not in out and "node_linear_1" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("layer "))
    assert header.split() == ["layer", "op", "in->out", "zero", "slot", "spk/ch", "T", "T",
                              "max", "cos", "iso", "cos", "out", "own", "err", "pJ"]


def test_elide_middle():
    assert elide_middle("short", 10) == "short"
    cut = elide_middle("encoder.layers.11.mlp.down_proj", 15)
    assert len(cut) == 15 and cut.startswith("enc") and cut.endswith("down_proj")


def test_html_reads_summary_first(report):
    page = render_html(report, "loihi2018")
    order = [page.index(k) for k in ("id='summary'", "<h2>Layers", "<h2>Sparsity and energy",
                                     "<h2>Configuration")]
    assert order == sorted(order)
    summary = page[page.index("id='summary'"):page.index("<h2>Layers")]
    for basis in report["energy"]:
        assert f"<b>{basis}</b>" in summary
    assert "estimate" in summary and "<b>why:</b> spiking costs more" in summary
    assert "class='sortable'" in page and "<script>" in page
    assert page.count("<img src='data:image/png;base64,") == 4


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs Debian's chromium")
def test_summary_screen_in_a_browser(report, tmp_path):
    """Headless Chromium draws the page: the first screen is not blank and holds the summary's
    cards (their tinted backgrounds) above the white page."""
    import importlib.util

    import matplotlib.image as mpimg

    spec = importlib.util.spec_from_file_location(
        "report_screenshot", Path(__file__).resolve().parents[1] / "tools" / "report_screenshot.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "r.html").write_text(render_html(report, "loihi2018"))
    tool.screenshot(tmp_path / "r.html", tmp_path / "r.png", 1280, 800)
    png = mpimg.imread(tmp_path / "r.png")[:, :, :3]
    assert png.shape[:2] == (800, 1280)
    dark = (png.mean(axis=2) < 0.5).mean()  # text
    tinted = (np.abs(png - 0.98).max(axis=2) < 0.01).mean()  # the cards' #fafafa
    assert 0.005 < dark < 0.3 and tinted > 0.1
