"""Screenshot the HTML report's summary screen in a real browser (headless Chromium), on a deep
model: a ResNet-shaped stack of 59 residual 3x3 convolutions and a classifier (60 spiked layers,
seeded random weights; what a ResNet-50-sized report looks like, in seconds of compile).

Compiles it with random calibration inputs, runs the chip model on a few of them, writes the
report (HTML and JSON) and takes the screenshot of the first screen. Chromium: Debian's
`chromium` package (apt-get install chromium).

    python tools/report_screenshot.py [--layers 60] [--out docs/report_summary.png]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
CHANNELS, SIDE, CLASSES = 8, 8, 10
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", "--virtual-time-budget=10000"]


def deep_model(layers: int, seed: int = 0) -> onnx.ModelProto:
    """A stem convolution, residual blocks of two convolutions (named like torchvision's
    ResNet: ``layer2.1.conv1``) and a linear classifier: ``layers`` weight layers in all."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name: str, x: str, cin: int) -> str:
        w = rng.normal(0, np.sqrt(2 / (9 * cin)), (CHANNELS, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.weight"))
        inits.append(numpy_helper.from_array(np.zeros(CHANNELS, np.float32), f"{name}.bias"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name],
                                      name=name, pads=[1, 1, 1, 1]))
        return name

    def relu(x: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [f"{x}.relu"], name=f"{x}.relu"))
        return f"{x}.relu"

    h = relu(conv("conv1", "image", 3))
    blocks = (layers - 2) // 2
    per_stage: dict[int, int] = {}
    for b in range(blocks):
        stage = b * 4 // blocks + 1
        per_stage[stage] = per_stage.get(stage, -1) + 1
        prefix = f"layer{stage}.{per_stage[stage]}"
        y = conv(f"{prefix}.conv2", relu(conv(f"{prefix}.conv1", h, CHANNELS)), CHANNELS)
        nodes.append(helper.make_node("Add", [y, h], [f"{prefix}.add"], name=f"{prefix}.add"))
        h = relu(f"{prefix}.add")
    nodes.append(helper.make_node("Flatten", [h], ["flat"], name="flatten"))
    w = rng.normal(0, np.sqrt(1 / (CHANNELS * SIDE * SIDE)),
                   (CHANNELS * SIDE * SIDE, CLASSES)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "fc.weight"))
    nodes.append(helper.make_node("MatMul", ["flat", "fc.weight"], ["logits"], name="fc"))
    graph = helper.make_graph(
        nodes, f"resnet_shaped_{layers}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def screenshot(html: Path, png: Path, width: int = 1366, height: int = 900) -> None:
    """The first screen of ``html`` as ``png``, by headless Chromium in a fresh profile."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("error: no chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        f"--window-size={width},{height}", f"--screenshot={png}",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report_summary.png")
    ap.add_argument("--work", type=Path, default=None, help="Keep the model and report here.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        onnx.save(deep_model(args.layers), work / "model.onnx")
        rng = np.random.default_rng(1)
        np.savez(work / "calib.npz", image=rng.normal(0, 1, (32, 3, SIDE, SIDE)).astype(np.float32))
        np.savez(work / "x.npz", image=rng.normal(0, 1, (4, 3, SIDE, SIDE)).astype(np.float32))
        cli = [sys.executable, "-m", "sbcompile"]
        subprocess.run([*cli, "compile", work / "model.onnx", "--calib", work / "calib.npz",
                        "--set", "targets=lava", "-o", work / "model.sbc"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*cli, "report", work / "model.sbc", "--chip", "loihi", "--input",
                        work / "x.npz", "--html", work / "report.html", "--json",
                        work / "report.json"], check=True, stdout=subprocess.DEVNULL)
        layers = len(json.loads((work / "report.json").read_text())["layers"])
        screenshot(work / "report.html", args.out)
    print(f"wrote {args.out} (summary screen of a {layers}-layer model)")


if __name__ == "__main__":
    main()
