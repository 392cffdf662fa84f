"""Builds a Lava program's process graph (in one form, for given inputs) and runs it on Lava's
fixed-point CPU simulation of Loihi 2. Runs inside the supervised child process (``child``).

Synapses hold their weights once. A fully connected layer of the split form is Lava's own Dense
with its bit-accurate model (fixed-point Lava drops the lowest bit of odd weights, so it holds
2 * W with weight_exp = -1, which is exact); every other layer (convolutions, weight groups,
fan-in splits) is a ``SharedSynapse`` process applying the int8 kernel or matrix to each step's
spikes. The fused form applies the same kernels inside its level processes. The run proceeds in
chunks of steps until every process has reported (windows depend on the counts, so the length is
known only as the simulation goes).
"""
from __future__ import annotations

import math
import shutil
import tempfile
from typing import Callable

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.models import PyDenseModelBitAcc
from lava.proc.dense.process import Dense
from lava.utils.weightutils import SignMode

from sbcompile.runtime.lava.opcounts import compute_flops
from sbcompile.runtime.lava.procs import models as M
from sbcompile.runtime.lava.procs import processes as P
from sbcompile.runtime.lava.program import LavaProgram
from sbcompile.runtime.lava.shapes import infer_shapes
from sbcompile.runtime.lava.synapses import SynapseKernel
from sbcompile.runtime.lava.tensors import get_result
from sbcompile.runtime.lava.topology import ProcSpec, build_topology


class LavaNetwork:
    """The Lava processes of one program run: build, ``run``, ``collect``, ``stop``. Tensors
    and results pass through ``run_dir`` (a temporary folder of its own when None)."""

    def __init__(self, program: LavaProgram, feeds: dict[str, np.ndarray], form: str,
                 run_dir: str | None = None, bands: int | None = None) -> None:
        self.program = program
        self.plan = program.plan
        self.form = form
        self._own_dir = run_dir is None  # a folder of its own, removed by stop()
        self.run_dir = tempfile.mkdtemp(prefix="sbc-lava-net-") if run_dir is None else run_dir
        self.feeds = feeds
        self.shapes = infer_shapes(self.plan, program.params(), feeds)
        self.dtypes = {k: dtype for k, (_, dtype) in self.plan["values"].items()}
        self.specs = build_topology(self.plan, form, bands)
        self.procs: dict[str, object] = {}           # spec name -> our process
        self.synapse_procs: dict[str, object] = {}   # synapse name -> its process (split)
        self.models: dict[object, type] = {}
        self.steps = 0
        self._started = False
        for spec in self.specs:
            self._build(spec)
        self._connect()

    # ---- construction -------------------------------------------------------------------
    def _triples(self, names: list[str]) -> list:
        return [(v, list(self.shapes[v]), self.dtypes[v]) for v in names]

    def _common(self, spec: ProcSpec) -> dict:
        params = {i: self.program.param(i) for i in spec.reads() if i not in self.plan["values"]}
        return {"in_specs": self._triples(spec.inputs), "out_specs": self._triples(spec.outputs),
                "record_specs": self._triples(spec.records),
                "preloaded": {v: self.feeds[v] for v in spec.preloaded}, "params": params,
                "nodes": spec.nodes, "run_dir": self.run_dir, "label": spec.label,
                "key": spec.name, "mode": self.plan["mode"]}

    def _tokens(self, enc: dict) -> int:
        shape = self.shapes[enc["x"]]
        return int(math.prod(shape[:-1]) if enc["axis"] == "token" else shape[0])

    def _threshold(self, enc: dict):
        return self.program.param(enc["threshold"]) if enc["threshold"] else None

    def _add(self, spec: ProcSpec, proc, base_model: type) -> None:
        self.procs[spec.name] = proc
        self.models[proc] = M.model_for(base_model, len(spec.inputs), len(spec.outputs))

    def _build(self, spec: ProcSpec) -> None:
        common = self._common(spec)
        if spec.kind == "compute":
            self._add(spec, P.Compute(**common), M.ComputeModel)
        elif spec.kind == "encoder":
            enc = spec.layers[0]["encoder"]
            proc = P.SpikeEncoder(neurons=enc["neurons"], encoder=enc,
                                  threshold=self._threshold(enc), **common)
            self._add(spec, proc, M.SpikeEncoderModel)
        elif spec.kind == "accumulator":
            self._build_split_synapse(spec, common)
        else:
            self._build_level(spec, common)

    def _kernel(self, syn: dict) -> SynapseKernel:
        return SynapseKernel(self.program.geometry(syn), self.program.param(syn["weight"]),
                             syn["fan_in_split"])

    def _build_split_synapse(self, spec: ProcSpec, common: dict) -> None:
        layer = spec.layers[0]
        syn, enc = layer["synapses"][0], layer["encoder"]
        bits = enc["message_bits"]
        if syn["dense"]:  # fixed-point Lava drops the lowest bit of odd weights: hold 2W
            weight = self.program.param(syn["weight"]).astype(np.int32)
            lava_syn = Dense(weights=2 * weight, weight_exp=-1, num_message_bits=bits,
                             sign_mode=SignMode.MIXED, name=syn["name"])
            self.models[lava_syn] = PyDenseModelBitAcc
        else:
            bare = {**common, "in_specs": [], "out_specs": [], "record_specs": [],
                    "preloaded": {}, "params": {}, "nodes": [], "key": f"{syn['name']}#synapse"}
            lava_syn = P.SharedSynapse(cols=syn["cols"], rows=syn["rows"],
                                       kernel=self._kernel(syn), **bare)
            self.models[lava_syn] = M.SharedSynapseModel
        self.synapse_procs[syn["name"]] = lava_syn
        proc = P.SpikeAccumulator(rows=syn["rows"], parts=syn["fan_in_split"],
                                  tokens=self._tokens(enc), acc_name=syn["acc"],
                                  acc_shape=list(self.shapes[syn["acc"]]), **common)
        self._add(spec, proc, M.SpikeAccumulatorModel)

    def _build_level(self, spec: ProcSpec, common: dict) -> None:
        layers = []
        for layer in spec.layers:
            enc = layer["encoder"]
            synapses = [{"name": syn["name"], "acc_name": syn["acc"], "rows": syn["rows"],
                         "parts": syn["fan_in_split"], "kernel": self._kernel(syn),
                         "acc_shape": list(self.shapes[syn["acc"]])}
                        for syn in layer["synapses"]]
            layers.append({"encoder": enc, "tokens": self._tokens(enc),
                           "threshold": self._threshold(enc), "synapses": synapses,
                           "decodes": layer["decodes"]})
        self._add(spec, P.Level(layers=layers, **common), M.LevelModel)

    def _connect(self) -> None:
        producer = {v: (spec, j) for spec in self.specs for j, v in enumerate(spec.outputs)}
        for spec in self.specs:
            for i, v in enumerate(spec.inputs):
                src, j = producer[v]
                getattr(self.procs[src.name], f"out_{j}").connect(
                    getattr(self.procs[spec.name], f"in_{i}"))
            if spec.kind == "accumulator":
                layer = spec.layers[0]
                enc = self.procs[layer["encoder"]["name"]]
                lava_syn = self.synapse_procs[layer["synapses"][0]["name"]]
                enc.s_out.connect(lava_syn.s_in)
                lava_syn.a_out.connect(self.procs[spec.name].a_in)
                enc.ctrl.connect(self.procs[spec.name].ctrl_in)

    # ---- running --------------------------------------------------------------------------
    def run(self, progress: Callable[[int], None] | None = None) -> int:
        """Run chunks of steps until every process owing results has reported; return the steps
        run. Chunks grow with the steps done, so at most a quarter more steps run than
        needed."""
        owing = [self.procs[s.name] for s in self.specs if s.records or s.kind != "compute"]
        while True:
            self.run_steps(max(4, self.steps // 4))
            if progress is not None:
                progress(self.steps)
            owing = [p for p in owing if int(p.done.get()[0]) != 1]
            if not owing:
                return self.steps

    def run_steps(self, steps: int) -> None:
        anchor = next(iter(self.procs.values()))
        if self._started:
            anchor.run(condition=RunSteps(num_steps=steps))
        else:
            anchor.run(condition=RunSteps(num_steps=steps),
                       run_cfg=Loihi2SimCfg(select_tag="fixed_pt",
                                            exception_proc_model_map=self.models))
            self._started = True
        self.steps += steps

    def stop(self) -> None:
        if self._started:
            next(iter(self.procs.values())).stop()
        if self._own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ---- results ------------------------------------------------------------------------
    def collect(self) -> tuple[dict[str, np.ndarray], dict]:
        """Graph outputs, counts and acc of every spike layer (by value name), and per-layer op
        counts measured in the simulation, from the result files the processes wrote."""
        results = {v: np.asarray(self.feeds[v]) for v in self.plan["outputs"]
                   if v in self.plan["inputs"]}
        layers: dict[str, dict] = {}
        reported = {s.name: get_result(self.run_dir, s.name) for s in self.specs
                    if s.records or s.kind != "compute"}
        for spec in self.specs:
            found = reported.get(spec.name, {})
            for key, value in found.items():
                kind, _, name = key.partition(":")
                if kind in ("record", "counts", "acc"):
                    results[name] = value.reshape(self.shapes[name]).astype(self.dtypes[name],
                                                                           copy=False)
        for spec in self.specs:
            for layer in spec.layers if spec.kind in ("level", "encoder") else []:
                enc = layer["encoder"]
                own = reported[spec.name]
                for syn in layer["synapses"]:
                    updates = (own[f"updates:{syn['name']}"] if spec.kind == "level"
                               else reported[syn["name"]]["updates"])
                    layers[syn["layer"]] = self._layer_counts(
                        syn, enc, own[f"events:{enc['name']}"].astype(np.int64),
                        own[f"stats:{enc['name']}"].astype(np.int64), int(updates[0]))
        compute = {n["name"]: compute_flops(n, self.shapes) for spec in self.specs
                   for n in [*spec.nodes, *(d for ly in spec.layers for d in ly["decodes"])]}
        return results, {"layers": layers, "compute_flops": compute, "steps": self.steps}

    def _layer_counts(self, syn: dict, enc: dict, events: np.ndarray, stats: np.ndarray,
                      acc_updates: int) -> dict:
        fan_out = self.program.geometry(syn).fan_out()
        return {"synapse": syn["name"], "encoder": enc["name"], "counts": enc["counts"],
                "acc": syn["acc"], "T": int(stats[2]),
                "synaptic_ops": int(events @ fan_out), "spike_messages": int(events.sum()),
                "neuron_updates": int(stats[0]), "accumulator_updates": acc_updates}
