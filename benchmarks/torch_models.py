"""Models the torch-target benchmarks build in code (random weights): a ResNet-50-sized CNN
(torchvision's ResNet-50 architecture: bottleneck blocks [3, 4, 6, 3], 25.6 M parameters),
exported to ONNX as a user would, and helpers shared by ``torch_gpu.py`` and ``torch_cpu.py``."""
from __future__ import annotations

import io

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


class ResNet50(nn.Module):
    """torchvision.models.resnet50's architecture, without torchvision."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                  nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for b in range(blocks):
                layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * 4
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def resnet50(seed: int = 0) -> ResNet50:
    """Random weights; BatchNorm statistics set so activations keep a unit scale."""
    torch.manual_seed(seed)
    model = ResNet50().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_(0, 0.1)
            m.weight.data.uniform_(0.2, 0.5)
    return model


def onnx_bytes(model: nn.Module, example: tuple, input_names: list[str],
               dynamic: dict | None = None) -> bytes:
    """The model as ONNX (torch.onnx.export, dynamo)."""
    buf = io.BytesIO()
    prog = torch.onnx.export(model, example, input_names=input_names, dynamo=True,
                             dynamic_shapes=dynamic, external_data=False)
    prog.save(buf) if hasattr(prog, "save") else None
    return buf.getvalue()
