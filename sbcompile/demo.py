"""`sbcompile demo`: the whole path on the bundled digits CNN (examples/digits).

Compiles the ONNX model with its calibration set under a preset, runs the float baseline and the
spiking model on the held-out digits with the reference interpreter, prints both accuracies, the
sparsity and the energy, runs a few digits on the simulated chip (Lava), and writes the artifact
and the HTML report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sbcompile.api import CompiledModel, compile
from sbcompile.chip import chip_section
from sbcompile.config import make_config
from sbcompile.errors import SbcError
from sbcompile.npz import load_npz
from sbcompile.output_path import check_output_dir, write_atomic
from sbcompile.report import print_terminal
from sbcompile.report_html import render_html

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits"
CHIP_IMAGES = 32


def accuracy(model: CompiledModel, images: np.ndarray, labels: np.ndarray,
             use_float: bool = False) -> float:
    logits = model.run({model.input_names[0]: images}, use_float=use_float).outputs
    return float(np.mean(logits[model.output_names[0]].argmax(-1) == labels))


def run_demo(preset: str, out_dir: str | Path, console) -> dict:
    for name in ("model.onnx", "calib.npz", "heldout.npz"):
        if not (EXAMPLE / name).is_file():
            raise SbcError(f"the bundled example is missing {name}: run "
                           "python examples/digits/train.py")
    make_config(preset)  # a bad preset is refused before anything is created
    out_dir = check_output_dir(out_dir, "--out folder")
    held = load_npz(EXAMPLE / "heldout.npz")
    model = compile(EXAMPLE / "model.onnx", preset=preset, calib=load_npz(EXAMPLE / "calib.npz"))
    model.save(out_dir / f"digits_{preset}.sbc")
    float_acc = accuracy(model, held["image"], held["label"], use_float=True)
    spike_acc = accuracy(model, held["image"], held["label"])
    console.print(f"digits CNN, {len(held['label'])} held-out images: float accuracy "
                  f"{float_acc:.2%}, spiking ({preset}) accuracy {spike_acc:.2%}")
    print_terminal(model.report, console=console)
    chip = on_simulated_chip(model, held["image"][:CHIP_IMAGES], held["label"][:CHIP_IMAGES])
    console.print(f"simulated Loihi 2 chip (Lava), first {CHIP_IMAGES} held-out images: accuracy "
                  f"{chip['accuracy']:.2%}, logits equal to the reference: {chip['identical']}")
    html_path = out_dir / f"digits_{preset}_report.html"
    page = render_html({**model.report, "chip": chip_section(model)}).encode()
    write_atomic(html_path, lambda f: f.write(page))
    console.print(f"artifact: {out_dir / f'digits_{preset}.sbc'}\nHTML report: {html_path}")
    return {"float_accuracy": float_acc, "spiking_accuracy": spike_acc, "chip": chip}


def on_simulated_chip(model: CompiledModel, images: np.ndarray, labels: np.ndarray) -> dict:
    """Run the stored Lava program on a few images; compare with the reference."""
    feeds = {model.input_names[0]: images}
    out = model.output_names[0]
    chip = model.run(feeds, "lava").outputs[out]
    ref = model.run(feeds, "reference").outputs[out]
    return {"accuracy": float(np.mean(chip.argmax(-1) == labels)),
            "identical": bool(np.array_equal(chip, ref))}
