"""Error propagation through the spiked layers: where the spiking error of a deep model is made.

A spiked layer's output differs from float for two reasons: its own spiking (the error it
*introduces*) and the error already in its input (the error it *inherits* from the layers
upstream). The analysis measures, per layer and on the calibration inputs:
- ``isolated``: only this layer spiked, its inputs taken from the float run;
- ``propagated``: every upstream layer spiked too (the spiked run's value at its output);
- ``introduced``: the spiked layer vs the float layer on the same (spiked) inputs, the error it
  adds where it actually sits; ``inherited``: the float layer on the spiked inputs vs float.
Each is cheap: the layer's nodes alone (its ``LayerSlice``) run on inputs the float and the
spiked runs of the same batch recorded.

What none of these can say is how much of the end-to-end error a layer causes: a small error in
a layer the rest of the model amplifies costs more than a large one it washes out. That is
``layer_sensitivity``: per layer, the end-to-end fidelity with that layer alone kept float
(all others spiked), one spiked run per layer; the recovery over the all-spiked model ranks the
culprits (the measure the per-layer tuner uses to choose which layers stay float).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.records import SpikedLayer, spiked_layers
from sbcompile.passes.metrics import Fidelity
from sbcompile.runtime.reference import evaluate


@dataclass
class LayerSlice:
    """Nodes of a graph (in graph order) and the runtime values they read from outside: the
    nodes that compute a layer's output from its input, or those after a point of the graph."""

    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]

    def run(self, graph: Graph, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The slice's outputs, its inputs read from ``env`` (a run of a graph with the same
        value names)."""
        sub = Graph(f"{graph.name}:slice", list(self.inputs), list(self.outputs),
                    {v: graph.values[v] for n in self.nodes for v in n.inputs + n.outputs if v},
                    self.nodes, {p: graph.params[p] for n in self.nodes for p in n.inputs
                                 if p in graph.params})
        return evaluate(sub, {v: env[v] for v in self.inputs})


def layer_slice(graph: Graph, start: str, output: str) -> LayerSlice:
    """The nodes of ``graph`` between the value ``start`` and ``output`` (walking back from
    ``output``, stopping at ``start``, parameters and graph inputs)."""
    producers = graph.producers()
    picked: dict[str, Node] = {}
    inputs: list[str] = []
    todo = [output]
    while todo:
        value = todo.pop()
        node = producers.get(value) if value != start else None
        if node is None:
            if value not in graph.params and value not in inputs:
                inputs.append(value)
            continue
        if node.name not in picked:
            picked[node.name] = node
            todo.extend(i for i in node.inputs if i)
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    return LayerSlice(sorted(picked.values(), key=lambda n: order[id(n)]), inputs, [output])


def suffix_slice(graph: Graph, start: int) -> LayerSlice:
    """``graph.nodes[start:]``, reading what the nodes before them computed; its outputs are the
    graph outputs it computes."""
    nodes = graph.nodes[start:]
    made = {o for n in nodes for o in n.outputs}
    inputs = list(dict.fromkeys(i for n in nodes for i in n.inputs
                                if i and i not in made and i not in graph.params))
    return LayerSlice(nodes, inputs, [o for o in graph.outputs if o in made])


class LayerPropagation:
    """Streaming fidelity of one spiked layer in isolation, as propagated, and split into the
    error it introduces and the error it inherits."""

    def __init__(self, graph: Graph, float_graph: Graph, info: SpikedLayer,
                 propagated: Fidelity) -> None:
        """``propagated``: the fidelity of the spiked run's layer output against the float run's,
        which the caller streams already (``update`` does not feed it again)."""
        self.spiked = layer_slice(graph, info.input, info.output)
        self.float = layer_slice(float_graph, info.input, info.output)
        self.graph, self.float_graph, self.input = graph, float_graph, info.input
        self.fid = {k: Fidelity() for k in ("input", "isolated", "introduced", "inherited")}
        self.propagated = propagated

    @property
    def keep(self) -> set[str]:
        """Values both runs must keep for ``update``."""
        return set(self.spiked.inputs) | set(self.float.inputs) | set(self.spiked.outputs)

    def update(self, env_f: dict[str, np.ndarray], env_s: dict[str, np.ndarray]) -> None:
        out = self.spiked.outputs[0]
        y_f, y_s = env_f[out], env_s[out]
        y_isolated = self.spiked.run(self.graph, env_f)[out]
        y_float_on_spiked = self.float.run(self.float_graph, env_s)[out]
        self.fid["input"].update(env_s[self.input], env_f[self.input])
        self.fid["isolated"].update(y_isolated, y_f)
        self.fid["introduced"].update(y_s, y_float_on_spiked)
        self.fid["inherited"].update(y_float_on_spiked, y_f)

    def result(self) -> dict:
        """The five fidelities, and ``introduced_share``: the introduced error's energy over the
        propagated error's at the layer output (near 1: the layer makes its own error; near 0:
        it passes on what it received)."""
        res = {"input": self.fid["input"].result(), "isolated": self.fid["isolated"].result(),
               "propagated": self.propagated.result(),
               "introduced": self.fid["introduced"].result(),
               "inherited": self.fid["inherited"].result()}
        total = self.propagated.ee
        res["introduced_share"] = self.fid["introduced"].ee / total if total > 0 else 0.0
        return res


def graph_with_float_layers(graph: Graph, float_graph: Graph, names) -> Graph:
    """``graph`` with the spiked layers ``names`` computed in float again (their float nodes
    from ``float_graph``), every other layer as compiled; encoders no layer reads any more are
    dropped."""
    layers = spiked_layers(graph)
    g = graph.copy()
    for name in names:
        info = layers.get(name)
        if info is None:
            raise SbcError(f"'{name}' is not a spiked layer of the model")
        g.nodes = [n for n in g.nodes if info.output not in n.outputs]
        for node in layer_slice(float_graph, info.input, info.output).nodes:
            for v in node.inputs + node.outputs:
                if v in float_graph.params:
                    if v in g.params and g.params[v] is not float_graph.params[v]:
                        raise SbcError(f"layer '{name}': parameter '{v}' differs in the "
                                       "compiled graph")
                    g.params[v] = float_graph.params[v]
                if v and v not in g.values:
                    g.values[v] = float_graph.values[v]
            g.nodes.append(Node(node.name if not any(n.name == node.name for n in g.nodes)
                                else g.fresh_name(node.name), node.op, list(node.inputs),
                                list(node.outputs), dict(node.attrs)))
    g.toposort()
    g.remove_unused()
    return g


class OutputsFidelity:
    """Streaming end-to-end fidelity per graph output: cosine, SNR, max abs error and (outputs
    of rank >= 2) argmax agreement."""

    def __init__(self, outputs: list[str]) -> None:
        self.fid = {o: Fidelity() for o in outputs}
        self.agree = {o: [0, 0] for o in outputs}

    def update(self, got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
        for o, fid in self.fid.items():
            fid.update(got[o], ref[o])
            if ref[o].ndim >= 2:
                self.agree[o][0] += int(np.sum(got[o].argmax(-1) == ref[o].argmax(-1)))
                self.agree[o][1] += int(np.prod(ref[o].shape[:-1]))

    def result(self) -> dict:
        return {o: {**fid.result(),
                    **({"argmax_agreement": self.agree[o][0] / self.agree[o][1]}
                       if self.agree[o][1] else {})}
                for o, fid in self.fid.items()}


def _score(outputs: dict) -> float:
    """One number per run: the mean end-to-end cosine over the outputs."""
    return float(np.mean([f["cosine"] for f in outputs.values()]))


def layer_sensitivity(graph: Graph, float_graph: Graph, batches, layers=None,
                      progress=None) -> dict:
    """Per spiked layer (all, or ``layers``): the end-to-end fidelity over ``batches`` (feeds)
    with that layer alone kept float, and ``recovered_cosine``, its gain in mean end-to-end
    cosine over the all-spiked ``graph`` (the layer's share of the end-to-end error; the largest
    first is the order to keep layers float in). Per batch: one float and one spiked run, then
    per layer only the nodes from that layer on, reading what the spiked run computed before it
    (``progress`` wraps the batch iterable).

    Returns {"spiked": end-to-end fidelity of ``graph``, "layers": {name: {"outputs": ...,
    "recovered_cosine": float, "recovered_agreement": float | None}}, "ranking": [names]}."""
    names = list(spiked_layers(graph)) if layers is None else list(layers)
    original = {n.name for n in graph.nodes}
    variants = {}
    for name in names:
        g = graph_with_float_layers(graph, float_graph, [name])
        start = next(i for i, n in enumerate(g.nodes) if n.name not in original)
        variants[name] = (g, suffix_slice(g, start))
    keep = {v for _, suffix in variants.values() for v in suffix.inputs}
    base = OutputsFidelity(float_graph.outputs)
    kept_float = {name: OutputsFidelity(float_graph.outputs) for name in names}
    for batch in (progress(batches) if progress else batches):
        ref = evaluate(float_graph, batch)
        env = evaluate(graph, batch, keep=keep)
        base.update(env, ref)
        for name, (g, suffix) in variants.items():
            kept_float[name].update({**env, **suffix.run(g, env)}, ref)
    spiked = base.result()
    result = {}
    for name, acc in kept_float.items():
        outs = acc.result()
        agreement = [outs[o]["argmax_agreement"] - spiked[o]["argmax_agreement"]
                     for o in outs if "argmax_agreement" in outs[o]]
        result[name] = {"outputs": outs, "recovered_cosine": _score(outs) - _score(spiked),
                        "recovered_agreement": float(np.mean(agreement)) if agreement else None}
    ranking = sorted(result, key=lambda n: -result[n]["recovered_cosine"])
    return {"spiked": spiked, "layers": result, "ranking": ranking}
