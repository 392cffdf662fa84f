"""NeuroBench metrics of a compiled model, computed by the ``neurobench`` package (the ``metrics``
extra) on the model's PyTorch form.

NeuroBench finds what it measures by module type: connection layers are ``nn.Linear`` /
``nn.Conv*`` modules (its hooks read their inputs), activations are activation modules (its
hooks read their outputs). The PyTorch form (``CompiledModel.to_torch()``) runs spiked layers as
custom operators, which NeuroBench cannot see, so the metrics run on a view of it: the PyTorch
form computes the model and hands over its integer values, and each spiked layer appears as a
``CountProbe`` activation (the integer counts the layer receives) feeding an ``nn.Linear`` /
``nn.ConvNd`` with the layer's int8 weights, whose output is checked equal to the layer's
accumulator from the PyTorch form on every batch. Footprint is measured on the PyTorch form
itself. Attention score products (``spike_scores``) have no NeuroBench connection type and are
left out; float layers have no module either.

What the metrics mean here (NeuroBench's definitions on these modules): ActivationSparsity is
the zero fraction of the counts spiked layers receive (sbcompile's count-zero figure);
SynapticOperations counts, per sample, nonzero count x nonzero weight pairs as effective ACs
when every count is in {-1, 0, 1} and as effective MACs otherwise, and Dense all pairs
(sbcompile's dense MACs of the spiked layers); ConnectionSparsity is the zero fraction of the
spiked layers' int8 weights; Footprint the bytes of the PyTorch form's parameters and buffers.
"""
from __future__ import annotations

import functools

import numpy as np

from sbcompile.errors import SbcError

METRICS = ("Footprint", "ConnectionSparsity", "ActivationSparsity", "SynapticOperations")


def neurobench_metrics(model, feeds: dict[str, np.ndarray], batch_size: int = 64) -> dict:
    """report.json's ``neurobench``: NeuroBench's metrics of ``model`` (a
    ``sbcompile.api.CompiledModel`` holding the torch program) on ``feeds``, under NeuroBench's
    own names, per sample where NeuroBench averages."""
    torch, nb = _import_neurobench()
    from sbcompile.runtime.reference import check_feeds

    if len(model.input_names) != 1:
        raise SbcError(f"NeuroBench feeds one input tensor to a model; this one takes "
                       f"{len(model.input_names)} ({', '.join(model.input_names)})")
    feeds = check_feeds(model.graph, feeds)
    x = torch.from_numpy(np.ascontiguousarray(feeds[model.input_names[0]]))
    form = model.to_torch("cpu")
    footprint = nb.static.Footprint()(nb.TorchModel(form))
    count_probe, metrics_view = _view_classes()
    view = nb.TorchModel(metrics_view(form, model.graph))
    view.add_activation_module(count_probe)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(len(x))), batch_size=batch_size)
    bench = nb.Benchmark(view, data, [], [], [[nb.static.ConnectionSparsity],
                                              [nb.workload.ActivationSparsity,
                                               nb.workload.SynapticOperations]])
    with torch.no_grad():
        results = dict(bench.run(quiet=True))
    results["Footprint"] = footprint
    return {"metrics": {k: _plain(results[k]) for k in METRICS},
            "samples": int(len(x)), "neurobench_version": _version(),
            "basis": "computed by neurobench on the PyTorch form: spiked layers seen as "
                     "count activations feeding Linear/Conv modules of their int8 weights; "
                     "float layers and attention score products are not connection layers "
                     "here"}


def _import_neurobench():
    try:
        import torch
        from neurobench import benchmarks, models
        from neurobench.metrics import static, workload
    except ImportError:
        raise SbcError("NeuroBench metrics need torch and the neurobench package: pip install "
                       "'sbcompile[metrics]' and pip install --no-deps neurobench") from None

    class NB:
        Benchmark = benchmarks.Benchmark
        TorchModel = models.TorchModel
    NB.static, NB.workload = static, workload
    return torch, NB


def _version() -> str:
    from importlib.metadata import version

    return version("neurobench")


def _plain(value):
    """A metric's value as JSON: dicts of numbers, numbers as Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value


@functools.cache
def _view_classes():
    """CountProbe and MetricsView (defined once torch is imported: torch is an extra)."""
    import torch

    class CountProbe(torch.nn.Module):
        """The integer counts one spiked layer receives, as a NeuroBench activation."""

        def forward(self, counts):
            return counts

    class MetricsView(torch.nn.Module):
        """The PyTorch form with each spiked layer as a CountProbe feeding a Linear/ConvNd
        module of its int8 weights (float64: exact for these products); the form computes the
        outputs."""

        def __init__(self, form, graph):
            super().__init__()
            self.form = form
            self.layers = torch.nn.ModuleDict()
            self.wiring = {}
            for node in graph.nodes:
                if node.op not in ("spike_linear", "spike_conv"):
                    continue
                key = f"layer{len(self.layers)}"
                weight = torch.from_numpy(graph.params[node.inputs[1]].astype(np.float64))
                self.layers[key] = torch.nn.Sequential(CountProbe(),
                                                       _connection(node, weight, torch))
                self.wiring[key] = (node.inputs[0], node.outputs[0], node.name)

        def forward(self, x):
            outputs, integers = self.form.with_integers(x)
            for key, layer in self.layers.items():
                counts, acc, name = self.wiring[key]
                y = layer(integers[counts].to(torch.float64))
                expected = integers[acc]
                if expected.dim() > y.dim():  # grouped linear: acc [..., G, N]
                    expected = expected.sum(dim=-2)
                if not bool((y == expected.to(y.dtype)).all()):
                    raise SbcError(f"layer '{name}': the NeuroBench view's product differs "
                                   "from the PyTorch form's accumulator")
            return outputs[0] if len(outputs) == 1 else outputs

    return CountProbe, MetricsView


def _connection(node, weight, torch):
    """The nn module of a spiked layer's synapses (no bias: NeuroBench counts none)."""
    from sbcompile.ir.ops import node_attrs

    a = node_attrs(node)
    if node.op == "spike_linear":
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False,
                                dtype=torch.float64)
    else:
        nd = weight.dim() - 2
        pads = list(a["pads"] or [0] * 2 * nd)
        if pads[:nd] != pads[nd:]:
            raise SbcError(f"layer '{node.name}': asymmetric padding {pads} has no NeuroBench "
                           "connection module")
        conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
        group = int(a["group"])
        layer = conv(weight.shape[1] * group, weight.shape[0], tuple(weight.shape[2:]),
                     stride=tuple(a["strides"] or [1] * nd), padding=tuple(pads[:nd]),
                     dilation=tuple(a["dilations"] or [1] * nd), groups=group, bias=False,
                     dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer.eval()
