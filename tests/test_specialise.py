"""A dynamic batch never blocks a target: a model whose exporter spells the flatten after an NHWC
transpose as ``x.reshape(x.shape[0], -1)`` (Shape -> Gather -> Concat -> Reshape) keeps its
other dims symbolic at compile time; at run time the graph is specialised to the input's shape
with the shape arithmetic folded, so every dim is static again and the target is lowered for
it, its counts equal to the reference's."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from sbcompile.api import CompiledModel
from sbcompile.ir.records import spiked_layers
from sbcompile.pipeline import compile_model, specialise
from sbcompile.runtime import reference


@pytest.fixture(scope="module")
def nhwc_model(tmp_path_factory) -> str:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
            self.head = nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            y = torch.relu(self.conv(x)).permute(0, 2, 3, 1)  # NHWC, as a Keras export
            y = y.reshape(x.shape[0], 16, 16, 8).permute(0, 3, 1, 2)
            y = torch.relu(self.down(y))
            return self.head(y.permute(0, 2, 3, 1).reshape(x.shape[0], -1))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("nhwc") / "nhwc.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Net().eval(), (torch.randn(2, 3, 16, 16),), str(path),
                          input_names=["x"], output_names=["y"], dynamo=False,
                          opset_version=17, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return str(path)


def test_specialising_folds_the_shape_arithmetic(nhwc_model):
    art = compile_model(nhwc_model, "spikingbrain", overrides={"targets": ""},
                        calib={"x": np.random.default_rng(0).random((8, 3, 16, 16), np.float32)})
    flat = [n.outputs[0] for n in art.graph.nodes if n.op == "reshape"][-1]
    assert not isinstance(art.graph.values[flat].shape[1], int)  # symbolic at compile time
    g = specialise(art.graph, {"x": (3, 3, 16, 16)})
    assert g.values[flat].shape == (3, 512)
    assert all(isinstance(d, int) for v in g.values.values() for d in v.shape)


@pytest.mark.parametrize("target", ["onnxruntime", "lava"])
def test_a_target_the_symbolic_dims_kept_from_lowering_runs_specialised(nhwc_model, target):
    calib = {"x": np.random.default_rng(1).random((8, 3, 16, 16), np.float32)}
    art = compile_model(nhwc_model, "spikingbrain", calib=calib, overrides={"targets": target})
    assert art.report["targets"][target]["lowered"] is False  # the reshape's dim is symbolic
    x = {"x": np.random.default_rng(2).random((3, 3, 16, 16), np.float32)}
    got = CompiledModel(art).run(x, target).counts
    counts = [layer.counts for layer in spiked_layers(art.graph).values()]
    want = reference.evaluate(specialise(art.graph, {"x": (3, 3, 16, 16)}), x, keep=counts)
    assert counts and set(counts) <= set(got)
    for name in counts:
        np.testing.assert_array_equal(np.asarray(got[name]).reshape(want[name].shape),
                                      want[name])
