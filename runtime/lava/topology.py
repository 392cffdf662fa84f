"""The process graph of a Lava program in one of its two forms, before any Lava object exists.

Values are placed on *levels*: graph inputs are level 0, a spike layer (an encoder with its
synapse layers) reads its input at level l and produces its values (counts, vth, acc, and in the
fused form its decodes) at level l + 1, and a compute node sits at the highest level of its
inputs. Every process edge then goes from a lower to a higher level or stays inside one process,
so the process graph is acyclic whatever the model's branches and residuals.

- ``split`` (hardware-faithful): per encoder a SpikeEncoder process; per synapse layer a Lava
  Dense/Sparse process and a SpikeAccumulator process; the compute nodes of each level in one
  Compute process (decodes included). Tokens pass through a layer one window after another.
- ``fused`` (simulation speed): Level processes, each holding a band of consecutive levels: their
  compute nodes and the spike layers that read them (encoder, synapses, accumulators and decodes,
  with no synaptic delay); all tokens of a tensor share one window. A level waits for the one
  below it, so levels never run side by side: every process beyond one per CPU only adds its
  per-step cost, and ``bands`` defaults to the CPUs (at most the levels).

Graph inputs are loaded into the processes that read them before the run; graph outputs are
recorded by the processes that produce them. Every other value a process needs from another one
travels on a tensor port (``procs.processes``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from sbcompile.errors import SbcError
from sbcompile.ir.ops import INTEGER_OPS

FORMS = ("fused", "split")


@dataclass
class ProcSpec:
    kind: str                    # compute | encoder | accumulator | level
    name: str
    nodes: list[dict] = field(default_factory=list)     # compute nodes (and fused decodes)
    layers: list[dict] = field(default_factory=list)    # {"encoder", "synapses", "decodes"}
    produces: set[str] = field(default_factory=set)     # every value this process computes
    inputs: list[str] = field(default_factory=list)     # tensors received, in-port order
    outputs: list[str] = field(default_factory=list)    # tensors sent, out-port order
    preloaded: list[str] = field(default_factory=list)  # graph inputs it reads
    records: list[str] = field(default_factory=list)    # graph outputs and integer compute
    # results (spike_scores) it produces
    level: int = -1                                     # of level and compute processes
    last_level: int = -1                                # of a band of levels (fused)

    @property
    def label(self) -> str:
        """How errors name this process: its node, or its kind and level(s)."""
        if self.kind == "level" and self.last_level > self.level:
            return f"fused levels {self.level}-{self.last_level}"
        if self.kind in ("level", "compute"):
            return f"{'fused' if self.kind == 'level' else 'compute'} level {self.level}"
        return self.name

    def reads(self) -> set[str]:
        """Values this process reads (an accumulator reads only its synapse's spikes)."""
        if self.kind == "accumulator":
            return set()
        reads = {i for n in self.nodes for i in n["inputs"] if i}
        for layer in self.layers:
            reads.add(layer["encoder"]["x"])
            reads |= {i for n in layer["decodes"] for i in n["inputs"] if i}
        return reads


def build_topology(plan: dict, form: str, bands: int | None = None) -> list[ProcSpec]:
    """Process specs, with their tensor ports, preloaded inputs and recorded outputs; the fused
    form groups its levels into ``bands`` processes (default: the CPUs)."""
    if form not in FORMS:
        raise SbcError(f"unknown Lava graph form '{form}' (known: {', '.join(FORMS)})")
    layers = _layers(plan, fuse_decodes=form == "fused")
    absorbed = {n["name"] for layer in layers for n in layer["decodes"]}
    compute = [n for n in plan["compute"] if n["name"] not in absorbed]
    node_level, layer_level = _levels(plan, compute, layers)
    specs: list[ProcSpec] = []
    if form == "fused":
        levels = sorted(set(node_level.values()) | set(layer_level.values()))
        for band in _bands(levels, bands or os.cpu_count() or 1):
            nodes = [n for n in compute if node_level[n["name"]] in band]
            here = [ly for ly in layers if layer_level[ly["encoder"]["name"]] in band]
            produces = _outputs(nodes) | {v for ly in here for v in _layer_values(ly)}
            specs.append(ProcSpec("level", f"#level{band[0]}", nodes=nodes, layers=here,
                                  produces=produces, level=band[0], last_level=band[-1]))
    else:
        for level in sorted(set(node_level.values())):
            nodes = [n for n in compute if node_level[n["name"]] == level]
            specs.append(ProcSpec("compute", f"#compute{level}", nodes=nodes,
                                  produces=_outputs(nodes), level=level))
        for layer in layers:
            enc = layer["encoder"]
            specs.append(ProcSpec("encoder", enc["name"], layers=[layer],
                                  produces={enc["counts"], enc["vth"]}))
            specs += [ProcSpec("accumulator", s["name"], layers=[{**layer, "synapses": [s]}],
                               produces={s["acc"]}) for s in layer["synapses"]]
    _wire(specs, plan)
    return specs


def _bands(levels: list[int], bands: int) -> list[list[int]]:
    """``levels`` cut into at most ``bands`` runs of consecutive levels, as even as possible."""
    bands = max(1, min(bands, len(levels)))
    edges = [round(i * len(levels) / bands) for i in range(bands + 1)]
    return [levels[a:b] for a, b in zip(edges[:-1], edges[1:])]


def _layers(plan: dict, fuse_decodes: bool) -> list[dict]:
    """Per encoder: its synapse layers and (fused form) the decodes it can run itself, those that
    read one of its accs, its vth and otherwise parameters only (names absent from the values)."""
    layers = []
    for enc in plan["encoders"]:
        synapses = [s for s in plan["synapses"] if s["encoder"] == enc["name"]]
        accs = {s["acc"] for s in synapses}
        decodes = [n for n in plan["compute"] if fuse_decodes and n["op"] == "spike_decode"
                   and n["inputs"][0] in accs and n["inputs"][1] == enc["vth"]
                   and all(not i or i not in plan["values"] for i in n["inputs"][2:])]
        layers.append({"encoder": enc, "synapses": synapses, "decodes": decodes})
    return layers


def _outputs(nodes: list[dict]) -> set[str]:
    return {o for n in nodes for o in n["outputs"]}


def _layer_values(layer: dict) -> set[str]:
    enc = layer["encoder"]
    return {enc["counts"], enc["vth"], *(s["acc"] for s in layer["synapses"]),
            *_outputs(layer["decodes"])}


def _levels(plan: dict, compute: list[dict],
            layers: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    """Level of every compute node and of every layer (the level of the value it reads)."""
    value_level = {v: 0 for v in plan["inputs"]}
    produced = set(value_level) | _outputs(compute) | {v for ly in layers
                                                       for v in _layer_values(ly)}
    node_level: dict[str, int] = {}
    layer_level: dict[str, int] = {}
    pending_nodes, pending_layers = list(compute), list(layers)
    while pending_nodes or pending_layers:
        progressed = False
        for layer in list(pending_layers):
            x = layer["encoder"]["x"]
            if x in value_level:
                layer_level[layer["encoder"]["name"]] = value_level[x]
                value_level.update({v: value_level[x] + 1 for v in _layer_values(layer)})
                pending_layers.remove(layer)
                progressed = True
        for node in list(pending_nodes):
            ins = [i for i in node["inputs"] if i in produced]
            if all(i in value_level for i in ins):
                level = max((value_level[i] for i in ins), default=0)
                node_level[node["name"]] = level
                value_level.update({o: level for o in node["outputs"]})
                pending_nodes.remove(node)
                progressed = True
        if not progressed:
            raise SbcError("the spiking graph reads a value before anything produces it")
    return node_level, layer_level


def _wire(specs: list[ProcSpec], plan: dict) -> None:
    producer = {v: s for s in specs for v in s.produces}
    missing = [v for v in plan["outputs"] if v not in producer and v not in plan["inputs"]]
    if missing:
        raise SbcError(f"graph output '{missing[0]}' is not produced by any process")
    integers = [n["outputs"][0] for n in plan["compute"] if n["op"] in INTEGER_OPS]
    for spec in specs:
        reads = spec.reads() - spec.produces
        spec.preloaded = sorted(reads & set(plan["inputs"]))
        spec.inputs = sorted(v for v in reads if v in producer)
        spec.records = [v for v in dict.fromkeys([*plan["outputs"], *integers])
                        if v in spec.produces]
    for spec in specs:
        for v in spec.inputs:
            if v not in producer[v].outputs:
                producer[v].outputs.append(v)
