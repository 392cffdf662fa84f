"""What the data-reading passes measured, as recorded before the passes streamed value by value:
the figures ``test_streaming.py`` requires the streamed passes to reproduce.

Models: the bundled digits CNN, and a small model shaped like the corpus's Keras vision models
(NHWC input transposed to NCHW, Conv/PReLU, max pooling, a depthwise and a pointwise conv, a
strided conv, max pooling, Flatten, two linear layers, Softmax; dynamic batch), shipped as
``tests/data/corpus_like.onnx``. Record (once, with the implementation to compare against):

    python tests/streaming_figures.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS_LIKE = HERE / "data" / "corpus_like.onnx"
RECORDED = HERE / "data" / "streaming_figures.json"
DIGITS = HERE.parent / "examples" / "digits"
CASES = [(model, preset) for model in ("digits", "corpus_like")
         for preset in ("spikingbrain", "loihi2")]
CALIB_BATCH = 16


def export_corpus_like(path: Path = CORPUS_LIKE) -> None:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.PReLU(16), nn.MaxPool2d(2),
                nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 32, 1), nn.ReLU(),
                nn.Conv2d(32, 16, 3, stride=2, padding=1), nn.PReLU(16), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(),
                                      nn.Linear(32, 10), nn.Softmax(-1))

        def forward(self, x):
            return self.head(self.features(x.permute(0, 3, 1, 2)))

    torch.manual_seed(5)
    model = Net().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.4)
    torch.onnx.export(model, (torch.randn(2, 40, 40, 3),), str(path), input_names=["image"],
                      output_names=["probs"], dynamo=False, opset_version=17,
                      dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}})


def model_and_calib(name: str, samples: int | None = None):
    """(ONNX path, calibration arrays) of a case's model."""
    if name == "digits":
        with np.load(DIGITS / "calib.npz") as z:
            image = z["image"]
        return DIGITS / "model.onnx", {"image": image[:samples or 40]}
    rng = np.random.default_rng(7)
    x = rng.standard_normal((samples or 40, 40, 40, 3)).astype(np.float32)
    x += np.linspace(-1, 1, 40, dtype=np.float32)[None, :, None, None]  # an image-like ramp
    return CORPUS_LIKE, {"image": x}


def compile_case(name: str, preset: str, calib_batch: int = CALIB_BATCH, samples=None,
                 **overrides):
    from sbcompile.pipeline import compile_model

    path, calib = model_and_calib(name, samples)
    sets = {"calib_batch": str(calib_batch), "targets": "", **overrides}
    return compile_model(path, preset, calib=calib, overrides=sets)


def figures(report: dict) -> dict:
    """Per layer: fidelity (every measure), sparsity, count histogram, op counts; the count
    bounds; the outputs' fidelity."""
    return {"layers": {layer["name"]: {"fidelity": layer["fidelity"],
                                       "sparsity": layer["sparsity"],
                                       "count_histogram": layer["count_histogram"],
                                       "ops": layer["ops"]}
                       for layer in report.get("layers", [])},
            "count_bounds": report.get("count_bounds", {}),
            "outputs_fidelity": report.get("outputs_fidelity"),
            "totals_sparsity": report.get("totals", {}).get("sparsity")}


def record() -> None:
    if not CORPUS_LIKE.is_file():
        export_corpus_like()
    data = {f"{m}/{p}": figures(compile_case(m, p).report) for m, p in CASES}
    RECORDED.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"wrote {RECORDED}")


if __name__ == "__main__":
    record()
