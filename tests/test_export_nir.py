"""NIR export: snnTorch reads the file through its NIR import and reproduces the reference's
binary spikes and outputs bit for bit (binary coding, one step from rest); load_nir reads it
back into an IR graph with the same function."""
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from sbcompile.backends.export import export
from sbcompile.backends.export_nir import inexpressible
from sbcompile.errors import SbcError
from sbcompile.frontends.nir_frontend import load_nir
from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).parent))
from test_export_netx import _compiled, binary_cnn, binary_mlp  # noqa: E402

MODELS = {"mlp": (binary_mlp, (16,)), "cnn": (binary_cnn, (1, 8, 8))}


def _snntorch_run(path, counts0: np.ndarray):
    """Each sample unbatched (NIR shapes carry no batch axis), one step from rest; returns the
    outputs and every spiking layer's spikes, stacked over samples."""
    from snntorch.import_nir import import_from_nir
    net = import_from_nir(nir.read(path))
    spikes: list = []
    for module in net.modules():
        if type(module).__name__ == "Leaky":
            module.register_forward_hook(lambda m, i, out: spikes.append(out.numpy().copy()))
    outputs, per_sample = [], []
    with torch.no_grad():
        for sample in counts0.astype(np.float32):
            spikes.clear()
            y, _ = net(torch.from_numpy(sample))
            outputs.append(y.numpy())
            per_sample.append(list(spikes))
    return np.stack(outputs), [np.stack(s) for s in zip(*per_sample)]


@pytest.mark.parametrize("model", MODELS)
def test_snntorch_reproduces_the_reference(model, tmp_path):
    art, feeds = _compiled(*MODELS[model])
    layers = list(art.graph.meta["layers"].values())
    want = reference.evaluate(art.graph, feeds, keep=[info["counts"] for info in layers])
    path = tmp_path / "model.nir"
    assert export(art, "nir", path)["left_out"] == []
    y, spikes = _snntorch_run(path, want[layers[0]["counts"]])
    assert len(spikes) == len(layers) - 1
    for i, s in enumerate(spikes):
        counts = want[layers[i + 1]["counts"]]
        np.testing.assert_array_equal(s.reshape(counts.shape), counts)
        assert 0 < counts.sum() < counts.size
    np.testing.assert_array_equal(y.reshape(want[art.graph.outputs[0]].shape),
                                  want[art.graph.outputs[0]])
    # read back: the IR graph computes the same function of the input counts
    graph = load_nir(path)
    got = reference.run(graph, {graph.inputs[0]: want[layers[0]["counts"]].astype(np.float32)})
    np.testing.assert_array_equal(got[graph.outputs[0]].reshape(y.shape), y)
    assert compile_model(graph, "float").graph.nodes


def pooled_cnn() -> torch.nn.Module:
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                               torch.nn.Linear(64, 10)).eval()


def test_partial_export_ends_in_a_conv_output_layer(tmp_path):
    """Pooling has no place in a binary chain: allow_partial cuts before the pool, and before the
    ReLU that no longer feeds a layer, leaving the conv as the output layer."""
    art, feeds = _compiled(pooled_cnn, (1, 8, 8))
    path = tmp_path / "part.nir"
    with pytest.raises(SbcError, match="node 'node_max_pool2d' \\(max_pool\\)"):
        export(art, "nir", path)
    result = export(art, "nir", path, allow_partial=True)
    relu = next(n for n in art.graph.nodes if n.op == "relu")
    assert result["left_out"][0] == relu.name
    layers = list(art.graph.meta["layers"].values())
    want = reference.evaluate(art.graph, feeds, keep=[layers[0]["counts"], relu.inputs[0]])
    y, spikes = _snntorch_run(path, want[layers[0]["counts"]])
    assert spikes == []
    np.testing.assert_array_equal(y, want[relu.inputs[0]])


def test_what_nir_cannot_hold_is_listed(tmp_path):
    art, _ = _compiled(binary_mlp, (16,), "spikingbrain")
    encoders = [n.name for n in art.graph.nodes if n.op == "spike_encode"]
    assert [name for name, _ in inexpressible(art.graph)] == encoders
    with pytest.raises(SbcError, match=r"nir cannot hold 3 node\(s\): .*max_count 1"):
        export(art, "nir", tmp_path / "x.nir")
    # per-channel thresholds after flattening differ within a conv channel: no per-channel bias
    art, _ = _compiled(binary_cnn, (1, 8, 8), overrides={"threshold_granularity": "channel"})
    convs = [n.name for n in art.graph.nodes if n.op == "spike_conv"]
    assert [name for name, _ in inexpressible(art.graph)] == convs[1:]


def test_load_nir_refuses_unknown_primitives(tmp_path):
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([4])),
               "delay": nir.Delay(delay=np.ones(4, np.float32)),
               "output": nir.Output(np.array([4]))},
        edges=[("input", "delay"), ("delay", "output")])
    path = tmp_path / "delay.nir"
    nir.write(path, graph)
    with pytest.raises(SbcError, match="node 'delay' \\(Delay\\)"):
        load_nir(path)
