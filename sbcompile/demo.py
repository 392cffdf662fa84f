"""`sbcompile demo`: the whole path on the bundled digits CNN (examples/digits).

Compiles the ONNX model with its calibration set under a preset, runs the float baseline and the
spiking model on the held-out digits with the reference interpreter, prints both accuracies, the
sparsity and the energy, and writes the artifact and the HTML report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sbcompile.artifact import write_atomic
from sbcompile.errors import SbcError
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_model
from sbcompile.report import print_terminal, render_html
from sbcompile.runtime import reference

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"


def accuracy(graph, images: np.ndarray, labels: np.ndarray) -> float:
    logits = reference.run(graph, {graph.inputs[0]: images})[graph.outputs[0]]
    return float(np.mean(logits.argmax(-1) == labels))


def run_demo(preset: str, out_dir: Path, console) -> dict:
    for name in ("model.onnx", "calib.npz", "heldout.npz"):
        if not (EXAMPLE / name).is_file():
            raise SbcError(f"the bundled example is missing {name}: run "
                           "python examples/digits/train.py")
    out_dir.mkdir(parents=True, exist_ok=True)
    held = load_npz(EXAMPLE / "heldout.npz")
    art = compile_model(EXAMPLE / "model.onnx", preset=preset,
                        calib=load_npz(EXAMPLE / "calib.npz"))
    art.save(out_dir / f"digits_{preset}.sbc")
    float_acc = accuracy(art.baseline, held["image"], held["label"])
    spike_acc = accuracy(art.graph, held["image"], held["label"])
    console.print(f"digits CNN, {len(held['label'])} held-out images: float accuracy "
                  f"{float_acc:.2%}, spiking ({preset}) accuracy {spike_acc:.2%}")
    print_terminal(art.report, console=console)
    html_path = out_dir / f"digits_{preset}_report.html"
    page = render_html(art.report).encode()
    write_atomic(html_path, lambda f: f.write(page))
    console.print(f"artifact: {out_dir / f'digits_{preset}.sbc'}\nHTML report: {html_path}")
    return {"float_accuracy": float_acc, "spiking_accuracy": spike_acc}
