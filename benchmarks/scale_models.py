"""Models for the Lava scale measurements that the real-model corpus lacks, built with PyTorch
and exported to ONNX with seeded random weights (no download): a torchvision-style ResNet-50
classifier (bottleneck blocks 3-4-6-3, 25.6 M parameters, 224x224) and an EEG-style 1-D CNN
over a long signal (8 channels x 7500 samples, strided temporal convolutions, a depthwise stage
and a linear head). Each comes with calibration inputs: photo crops from scikit-learn's sample
images for the ResNet, band-limited noise with rhythms for the EEG network.

    python benchmarks/scale_models.py resnet50|eeg1d OUT_DIR [--samples 8]
writes OUT_DIR/<name>.onnx and OUT_DIR/<name>_calib.npz.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_model_inputs as inp  # noqa: E402


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    """torchvision.models.resnet50's architecture (v1.5: stride in the 3x3 convolution)."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], 64
        for width, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(count):
                blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * Bottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(
            self.blocks(self.stem(x)), 1), 1))


class Eeg1d(nn.Module):
    """Temporal convolutions over 8 x 7500 samples, as EEG and audio front ends take."""

    def __init__(self, channels: int = 8, classes: int = 5) -> None:
        super().__init__()
        layers, cin = [], channels
        for cout, k, s in ((32, 25, 5), (32, 9, 3), (64, 9, 2), (64, 5, 2)):
            layers += [nn.Conv1d(cin, cout, k, s, k // 2), nn.BatchNorm1d(cout), nn.ReLU()]
            cin = cout
        layers += [nn.Conv1d(cin, cin, 7, 1, 3, groups=cin), nn.ReLU(),
                   nn.Conv1d(cin, 128, 1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(-1))


def _randomise_norms(model: nn.Module, rng: torch.Generator) -> None:
    """Batch norms with random running statistics, so activations have trained-like scales."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1, generator=rng)
            m.running_var.uniform_(0.5, 1.5, generator=rng)
            m.weight.data.uniform_(0.3, 1.0, generator=rng)
            m.bias.data.uniform_(-0.1, 0.1, generator=rng)


def resnet50_inputs(n: int) -> np.ndarray:
    crops = inp.photo_crops(np.random.default_rng(0), n, 224, 224)
    return inp.nchw(crops, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).astype(np.float32)


def eeg_inputs(n: int, channels: int = 8, samples: int = 7500) -> np.ndarray:
    """Band-limited noise plus alpha/theta-like rhythms per channel."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / 250.0
    noise = rng.normal(size=(n, channels, samples))
    noise = np.cumsum(noise, axis=-1) * 0.05
    noise -= noise.mean(axis=-1, keepdims=True)
    freqs = rng.uniform(4, 12, size=(n, channels, 1))
    return (noise + np.sin(2 * np.pi * freqs * t)).astype(np.float32)


MODELS = {"resnet50": (ResNet50, resnet50_inputs, (1, 3, 224, 224)),
          "eeg1d": (Eeg1d, eeg_inputs, (1, 8, 7500))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    build, inputs, shape = MODELS[args.model]
    torch.manual_seed(0)
    model = build().eval()
    _randomise_norms(model, torch.Generator().manual_seed(1))
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / f"{args.model}.onnx"
    torch.onnx.export(model, torch.zeros(shape), str(onnx_path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                      opset_version=17, dynamo=False)
    np.savez(args.out / f"{args.model}_calib.npz", x=inputs(args.samples))
    params = sum(p.numel() for p in model.parameters())
    print(f"{onnx_path}: {params / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
