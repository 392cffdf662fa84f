"""Train the bundled example: a small CNN on scikit-learn's 8x8 digits, deterministically.

Writes, beside this file: model.onnx (float, dynamic batch), calib.npz (256 training images, the
calibration set), heldout.npz (the held-out 20 %: `image` and `label`). Run:
    python examples/digits/train.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(),
                                        nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


def load_split():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> nn.Module:
    """Adam (lr 3e-3) on cross-entropy, batches of 64 in a seeded order; returns it in eval mode.
    Deterministic for a seed (with torch's deterministic algorithms on)."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def train(seed: int = 0, epochs: int = 30) -> tuple[DigitsCNN, float]:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    x_tr, x_te, y_tr, y_te = load_split()
    model = fit(DigitsCNN(), x_tr, y_tr, seed, epochs)
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean()
    return model, float(acc)


def strip_metadata(path: Path) -> None:
    """Drop the exporter's per-value metadata (source stack traces with local paths)."""
    import onnx

    model = onnx.load(str(path))
    for item in [*model.graph.node, *model.graph.input, *model.graph.output,
                 *model.graph.value_info, *model.graph.initializer]:
        del item.metadata_props[:]
    del model.metadata_props[:]
    onnx.save(model, str(path))


def main() -> None:
    model, acc = train()
    x_tr, x_te, _, y_te = load_split()
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, (torch.from_numpy(x_te[:4]),), str(HERE / "model.onnx"),
                      input_names=["image"], output_names=["logits"], dynamo=True,
                      dynamic_shapes={"image": {0: batch}}, external_data=False)
    strip_metadata(HERE / "model.onnx")
    np.savez(HERE / "calib.npz", image=x_tr[:256])
    np.savez(HERE / "heldout.npz", image=x_te, label=y_te)
    print(f"held-out accuracy (torch, float): {acc:.4f}; wrote model.onnx, calib.npz, heldout.npz")


if __name__ == "__main__":
    main()
