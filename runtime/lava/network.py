"""Builds a Lava program's process graph (in one form, for given inputs) and runs it on Lava's
fixed-point CPU simulation of Loihi 2. Runs inside the supervised child process (``child``).

Synapses of the split form are Lava's own Dense (fully connected layers) or Sparse (convolutions,
weight groups, fan-in splits) with their bit-accurate models; fixed-point Lava drops the lowest bit
of odd weights, so they hold 2 * W with weight_exp = -1, which is exact. The run proceeds in
chunks of steps until every graph output is recorded (windows depend on the counts, so the
length is known only as the simulation goes).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.models import PyDenseModelBitAcc
from lava.proc.dense.process import Dense
from lava.proc.sparse.models import PySparseModelBitAcc
from lava.proc.sparse.process import Sparse
from lava.utils.weightutils import SignMode
from scipy.sparse import csr_matrix

from sbcompile.runtime.lava.opcounts import compute_flops
from sbcompile.runtime.lava.procs import models as M
from sbcompile.runtime.lava.procs import processes as P
from sbcompile.runtime.lava.program import LavaProgram
from sbcompile.runtime.lava.shapes import infer_shapes
from sbcompile.runtime.lava.topology import ProcSpec, build_topology


class LavaNetwork:
    """The Lava processes of one program run: build, ``run``, ``collect``, ``stop``."""

    def __init__(self, program: LavaProgram, feeds: dict[str, np.ndarray], form: str,
                 run_dir: str | None = None) -> None:
        self.program = program
        self.plan = program.plan
        self.form = form
        self.run_dir = run_dir
        self.feeds = feeds
        self.shapes = infer_shapes(self.plan, program.params(), feeds)
        self.dtypes = {k: dtype for k, (_, dtype) in self.plan["values"].items()}
        self.specs = build_topology(self.plan, form)
        self.procs: dict[str, object] = {}           # spec name -> our process
        self.synapse_procs: dict[str, object] = {}   # synapse name -> Lava Dense/Sparse (split)
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
                "mode": self.plan["mode"]}

    def _size(self, value: str) -> int:
        return int(math.prod(self.shapes[value]))

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
            proc = P.SpikeEncoder(neurons=enc["neurons"], tokens=self._tokens(enc), encoder=enc,
                                  threshold=self._threshold(enc), **common)
            self._add(spec, proc, M.SpikeEncoderModel)
        elif spec.kind == "accumulator":
            self._build_split_synapse(spec, common)
        else:
            self._build_level(spec, common)

    def _build_split_synapse(self, spec: ProcSpec, common: dict) -> None:
        layer = spec.layers[0]
        syn, enc = layer["synapses"][0], layer["encoder"]
        csr = self.program.synapse_matrix(syn)
        bits = enc["message_bits"]
        # fixed-point Lava drops the lowest bit of odd weights: hold 2W, shift back by one
        if syn["dense"]:
            lava_syn = Dense(weights=2 * csr.to_dense().astype(np.int32), weight_exp=-1,
                             num_message_bits=bits, sign_mode=SignMode.MIXED, name=syn["name"])
            self.models[lava_syn] = PyDenseModelBitAcc
        else:
            weights = csr_matrix((2 * csr.data.astype(np.int32), csr.indices, csr.indptr),
                                 shape=(csr.rows, csr.cols))
            lava_syn = Sparse(weights=weights, weight_exp=-1, num_message_bits=bits,
                              sign_mode=SignMode.MIXED, name=syn["name"])
            self.models[lava_syn] = PySparseModelBitAcc
        self.synapse_procs[syn["name"]] = lava_syn
        proc = P.SpikeAccumulator(rows=csr.rows, acc_size=self._size(syn["acc"]),
                                  parts=syn["fan_in_split"], tokens=self._tokens(enc),
                                  acc_name=syn["acc"], acc_shape=list(self.shapes[syn["acc"]]),
                                  **common)
        self._add(spec, proc, M.SpikeAccumulatorModel)

    def _build_level(self, spec: ProcSpec, common: dict) -> None:
        layers = []
        for layer in spec.layers:
            enc = layer["encoder"]
            synapses = []
            for syn in layer["synapses"]:
                csr = self.program.synapse_matrix(syn)
                matrix = (csr.to_dense().astype(np.int64) if syn["dense"] else
                          csr_matrix((csr.data.astype(np.int64), csr.indices, csr.indptr),
                                     shape=(csr.rows, csr.cols)))
                synapses.append({"name": syn["name"], "acc_name": syn["acc"], "rows": csr.rows,
                                 "parts": syn["fan_in_split"], "matrix": matrix,
                                 "acc_shape": list(self.shapes[syn["acc"]])})
            layers.append({"encoder": enc, "tokens": self._tokens(enc),
                           "threshold": self._threshold(enc), "synapses": synapses,
                           "decodes": layer["decodes"]})
        proc = P.Level(layers=layers,
                       counts_size=sum(self._size(ly["encoder"]["counts"]) for ly in spec.layers),
                       events_size=sum(ly["encoder"]["neurons"] for ly in spec.layers),
                       acc_size=sum(self._size(s["acc"]) for ly in spec.layers
                                    for s in ly["synapses"]),
                       n_encoders=len(spec.layers),
                       n_synapses=sum(len(ly["synapses"]) for ly in spec.layers), **common)
        self._add(spec, proc, M.LevelModel)

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
        """Run chunks of steps until every graph output is recorded; return the steps run.
        Chunks grow with the steps done, so at most a quarter more steps run than needed."""
        recorders = [self.procs[s.name] for s in self.specs if s.records]
        while True:
            self.run_steps(max(4, self.steps // 4))
            if progress is not None:
                progress(self.steps)
            if all(int(p.done.get()[0]) == 1 for p in recorders):
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

    # ---- results ------------------------------------------------------------------------
    def collect(self) -> tuple[dict[str, np.ndarray], dict]:
        """Graph outputs, counts and acc of every spike layer (by value name), and per-layer op
        counts measured in the simulation."""
        results = {v: np.asarray(self.feeds[v]) for v in self.plan["outputs"]
                   if v in self.plan["inputs"]}
        for spec in self.specs:
            if spec.records:
                record = self.procs[spec.name].record.get()
                results.update(self._unpack(record, spec.records))
        layers: dict[str, dict] = {}
        for spec in self.specs:
            if spec.kind == "level":
                self._collect_level(spec, results, layers)
            elif spec.kind == "encoder":
                self._collect_split(spec, results, layers)
        compute = {n["name"]: compute_flops(n, self.shapes) for spec in self.specs
                   for n in [*spec.nodes, *(d for ly in spec.layers for d in ly["decodes"])]}
        return results, {"layers": layers, "compute_flops": compute, "steps": self.steps}

    def _unpack(self, flat: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        out, offset = {}, 0
        for name in names:
            size = self._size(name)
            out[name] = flat[offset:offset + size].reshape(self.shapes[name]).astype(
                self.dtypes[name])
            offset += size
        return out

    def _collect_level(self, spec: ProcSpec, results: dict, layers: dict) -> None:
        proc = self.procs[spec.name]
        encoders = [ly["encoder"] for ly in spec.layers]
        synapses = [s for ly in spec.layers for s in ly["synapses"]]
        results.update(self._unpack(proc.counts.get(), [e["counts"] for e in encoders]))
        results.update(self._unpack(proc.acc.get(), [s["acc"] for s in synapses]))
        events = proc.events.get().astype(np.int64)
        stats = proc.stats.get().astype(np.int64)
        offset, k = 0, 0
        for i, layer in enumerate(spec.layers):
            enc = layer["encoder"]
            enc_events = events[offset:offset + enc["neurons"]]
            offset += enc["neurons"]
            for syn in layer["synapses"]:
                acc_updates = int(stats[3 * len(spec.layers) + k])
                k += 1
                layers[syn["layer"]] = self._layer_counts(syn, enc, enc_events, stats[3 * i:],
                                                          acc_updates)

    def _collect_split(self, spec: ProcSpec, results: dict, layers: dict) -> None:
        layer = spec.layers[0]
        enc = layer["encoder"]
        proc = self.procs[spec.name]
        results.update(self._unpack(proc.counts.get(), [enc["counts"]]))
        events = proc.events.get().astype(np.int64)
        stats = proc.stats.get().astype(np.int64)
        for syn in layer["synapses"]:
            acc_proc = self.procs[syn["name"]]
            results.update(self._unpack(acc_proc.acc.get(), [syn["acc"]]))
            layers[syn["layer"]] = self._layer_counts(syn, enc, events, stats,
                                                      int(acc_proc.updates.get()[0]))

    def _layer_counts(self, syn: dict, enc: dict, events: np.ndarray, stats: np.ndarray,
                      acc_updates: int) -> dict:
        fan_out = self.program.synapse_matrix(syn).fan_out()
        return {"synapse": syn["name"], "encoder": enc["name"], "counts": enc["counts"],
                "acc": syn["acc"], "T": int(stats[2]),
                "synaptic_ops": int(events @ fan_out), "spike_messages": int(events.sum()),
                "neuron_updates": int(stats[0]), "accumulator_updates": acc_updates}
