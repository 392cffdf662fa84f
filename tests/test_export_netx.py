"""netx export: lava-dl 0.6.0's own ``netx.hdf5.Network`` loads the file and Lava (fixed point)
runs it to the reference's binary spikes and output accumulators exactly.

lava-dl's ``slayer`` package imports its object-detection helpers (OpenCV, torchvision) at
package level; torchvision cannot be installed beside torch 2.13's CPU build. netx needs only
slayer's neuron modules, so the package is registered without running its ``__init__``; every
module netx uses is lava-dl's own, unchanged.
"""
import importlib.util
import os
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from sbcompile.backends.export import export
from sbcompile.backends.export_netx import inexpressible
from sbcompile.errors import SbcError
from sbcompile.pipeline import compile_module
from sbcompile.runtime import reference


def _netx():
    from sbcompile.runtime.lava import shim
    shim.install()
    if "lava.lib.dl.slayer" not in sys.modules:
        root = list(importlib.util.find_spec("lava.lib.dl").submodule_search_locations)[0]
        package = types.ModuleType("lava.lib.dl.slayer")
        package.__path__ = [os.path.join(root, "slayer")]
        sys.modules["lava.lib.dl.slayer"] = package
    from lava.lib.dl.netx import hdf5
    return hdf5


def binary_mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(),
                         nn.Linear(24, 10)).eval()


def binary_cnn() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


def _compiled(build, shape, preset="ternary", overrides=None):
    """Compiled under ``preset``; the ternary preset in its one-step form (max_count 1) unless
    ``overrides`` say otherwise."""
    if preset == "ternary":
        overrides = {"max_count": "1", **(overrides or {})}
    rng = np.random.default_rng(7)
    calib = {"x": rng.standard_normal((8,) + shape).astype(np.float32)}
    feeds = {"x": rng.standard_normal((8,) + shape).astype(np.float32)}
    return compile_module(build(), (calib["x"],), preset=preset, calib=calib,
                          overrides=overrides, input_names=["x"]), feeds


def _whc(a: np.ndarray) -> np.ndarray:
    """[N, C, H, W] or [N, K] -> netx's neuron order (W, H, C) flattened, samples last."""
    return (a.transpose(0, 3, 2, 1) if a.ndim == 4 else a).reshape(a.shape[0], -1).T


def _run_lava(path, counts0: np.ndarray):
    """Stream one sample per step; returns (spikes per hidden layer, output voltage), each
    [step, neuron] in netx's neuron order."""
    hdf5 = _netx()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    net = hdf5.Network(net_config=str(path), input_message_bits=2)
    steps = counts0.shape[0] + len(net.layers) + 1
    data = np.zeros((_whc(counts0).shape[0], steps))
    data[:, :counts0.shape[0]] = _whc(counts0)
    source = RingBuffer(data=data.reshape(net.inp.shape + (steps,)))
    source.s_out.connect(net.inp)
    probes = []
    for layer in net.layers:
        monitor = Monitor()
        monitor.probe(layer.neuron.s_out if layer is not net.layers[-1] else layer.neuron.v,
                      steps)
        probes.append(monitor)
    traces = []
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        for monitor in probes:
            (per_var,) = monitor.get_data().values()
            (trace,) = per_var.values()
            traces.append(trace.reshape(steps, -1))
    finally:
        net.stop()
    return traces, len(net.layers)


@pytest.mark.parametrize("build,shape,granularity", [(binary_mlp, (16,), "tensor"),
                                                     (binary_cnn, (1, 8, 8), "channel")],
                         ids=["mlp", "cnn"])
def test_netx_runs_in_lava_to_the_reference(build, shape, granularity, tmp_path):
    """The CNN's per-channel thresholds after flattening give every conv neuron its own bias."""
    art, feeds = _compiled(build, shape, overrides={"threshold_granularity": granularity})
    layers = list(art.graph.meta["layers"].values())
    keep = [v for info in layers for v in (info["counts"], info["acc"])]
    want = reference.evaluate(art.graph, feeds, keep=keep)
    path = tmp_path / "model.net"
    result = export(art, "netx", path)
    assert result["left_out"] == []
    traces, depth = _run_lava(path, want[layers[0]["counts"]])
    n = feeds["x"].shape[0]
    assert depth == len(layers)
    for i, trace in enumerate(traces[:-1]):  # layer i's spikes are layer i+1's counts
        counts = want[layers[i + 1]["counts"]]
        acc_shape = want[layers[i]["acc"]].shape  # the counts in the shape of this layer
        counts = counts.reshape(acc_shape if len(acc_shape) == 4 else (n, -1))
        np.testing.assert_array_equal(trace[i + 1:i + 1 + n], _whc(counts).T)
        assert 0 < counts.sum() < counts.size
    acc = want[layers[-1]["acc"]]
    got_acc = traces[-1][depth:depth + n] / 64
    np.testing.assert_array_equal(got_acc, acc.reshape(n, -1))
    # the reference's decode of Lava's accumulator is the graph output, bit for bit
    decode = next(node for node in art.graph.nodes if node.outputs == art.graph.outputs)
    env = reference.evaluate(art.graph, feeds, keep=decode.inputs)
    env[decode.inputs[0]] = got_acc.reshape(acc.shape).astype(np.int32)
    y = reference.KERNELS["spike_decode"](reference.node_attrs(decode),
                                          *[env[i] for i in decode.inputs])
    np.testing.assert_array_equal(y, want[art.graph.outputs[0]])


@pytest.mark.parametrize("preset,overrides,reason", [
    ("spikingbrain", None, "static thresholds with max_count 1"),
    ("loihi2", None, "max_count 127"),
    ("ternary", {"max_count": None}, "T steps of ternary spikes")])  # calibrated T steps
def test_graphs_beyond_binary_spikes_are_refused(preset, overrides, reason, tmp_path):
    art, _ = _compiled(binary_mlp, (16,), preset, overrides)
    problems = inexpressible(art.graph)
    encoders = [n.name for n in art.graph.nodes if n.op == "spike_encode"]
    assert [name for name, _ in problems] == encoders
    with pytest.raises(SbcError, match=f"netx cannot hold 3 node\\(s\\): .*{reason}"):
        export(art, "netx", tmp_path / "x.net")
    assert not (tmp_path / "x.net").exists()
