"""ProcessModels of the sbcompile Lava Processes: Python models on the Loihi sync protocol.

Every model is a small dataflow engine over ``env`` (value name -> array): each step it receives
the tensors that arrived, advances (compute nodes whose inputs are all present run at once;
neurons take one step), sends each output tensor once it exists, and records graph outputs. An
exception is written to the run's failure record before Lava sees it. Tensor ports vary per
instance, so ``model_for`` derives a model class declaring the ports an instance has; the runner
pins it to that instance.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from sbcompile.ir.graph import Node
from sbcompile.runtime.lava.failure import record_failure
from sbcompile.runtime.lava.neurons import AccumulatorCore, EncoderCore
from sbcompile.runtime.lava.procs.processes import (CTRL_WORDS, Compute, Level,
                                                     SpikeAccumulator, SpikeEncoder,
                                                     message_size)
from sbcompile.ir.ops import node_attrs
from sbcompile.runtime.reference import KERNELS

_DERIVED: dict[tuple, type] = {}


def model_for(base: type, n_in: int, n_out: int) -> type:
    """``base`` with tensor ports in_0..in_{n_in-1} and out_0..out_{n_out-1} declared."""
    key = (base, n_in, n_out)
    if key not in _DERIVED:
        ports = {f"in_{i}": LavaPyType(PyInPort.VEC_DENSE, np.float64) for i in range(n_in)}
        ports.update({f"out_{j}": LavaPyType(PyOutPort.VEC_DENSE, np.float64)
                      for j in range(n_out)})
        _DERIVED[key] = type(f"{base.__name__}_{n_in}in_{n_out}out", (base,), ports)
    return _DERIVED[key]


class TensorModel(PyLoihiProcessModel):
    """The dataflow engine shared by all sbcompile models."""

    record: np.ndarray = LavaPyType(np.ndarray, np.float64)
    done: np.ndarray = LavaPyType(np.ndarray, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.env: dict[str, np.ndarray] = {**p.get("params", {}), **p["preloaded"]}
        self.pending = [Node.from_json(n) for n in p.get("nodes", [])]
        self.unsent = list(enumerate(p["out_specs"]))
        self.idle = [np.zeros(message_size(shape)) for _, shape, _ in p["out_specs"]]

    def run_spk(self) -> None:
        try:
            self.receive()
            self.advance()
            self.send_ready()
            self.record_outputs()
        except Exception as exc:
            record_failure(self.proc_params["run_dir"], self.proc_params["label"], exc)
            raise

    def advance(self) -> None:
        self.run_ready_nodes()

    def receive(self) -> None:
        for i, (name, shape, dtype) in enumerate(self.proc_params["in_specs"]):
            msg = getattr(self, f"in_{i}").recv()
            if msg[0] == 1 and name not in self.env:
                self.env[name] = msg[1:].reshape(shape).astype(dtype)

    def run_ready_nodes(self) -> None:
        """Run, in order, every pending node whose inputs are all present."""
        progressed = True
        while progressed:
            progressed = False
            for node in list(self.pending):
                if all(not i or i in self.env for i in node.inputs):
                    run_node(node, self.env)
                    self.pending.remove(node)
                    progressed = True

    def send_ready(self) -> None:
        ready = {j for j, (name, _, _) in self.unsent if name in self.env}
        for j, (name, _, _) in enumerate(self.proc_params["out_specs"]):
            port = getattr(self, f"out_{j}")
            if j in ready:
                value = np.asarray(self.env[name], np.float64).ravel()
                port.send(np.concatenate(([1.0], value)))
            else:
                port.send(self.idle[j])
        self.unsent = [(j, spec) for j, spec in self.unsent if j not in ready]

    def record_outputs(self) -> None:
        specs = self.proc_params["record_specs"]
        if specs and not self.done[0] and all(name in self.env for name, _, _ in specs):
            flat = np.concatenate([np.asarray(self.env[name], np.float64).ravel()
                                   for name, _, _ in specs])
            self.record[:flat.size] = flat
            self.done[0] = 1


def run_node(node: Node, env: dict[str, np.ndarray]) -> None:
    """Evaluate one IR node with its reference kernel, adding its outputs to ``env``."""
    out = KERNELS[node.op](node_attrs(node), *[env[i] if i else None for i in node.inputs])
    for name, arr in zip(node.outputs, out if isinstance(out, tuple) else (out,)):
        env[name] = arr


@implements(proc=Compute, protocol=LoihiProtocol)
@requires(CPU)
class ComputeModel(TensorModel):
    pass


@implements(proc=SpikeEncoder, protocol=LoihiProtocol)
@requires(CPU)
class SpikeEncoderModel(TensorModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    ctrl: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32)
    counts: np.ndarray = LavaPyType(np.ndarray, np.int32)
    events: np.ndarray = LavaPyType(np.ndarray, np.int64)
    stats: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.enc = proc_params["encoder"]
        self.core = EncoderCore(self.enc, proc_params["mode"], proc_params["threshold"],
                                parallel=False)

    def advance(self) -> None:
        if not self.core.loaded and self.enc["x"] in self.env:
            counts, vth = self.core.load(self.env[self.enc["x"]])
            self.env.update({self.enc["counts"]: counts, self.enc["vth"]: vth})
            self.counts[:] = counts.ravel()
        spikes, ctrl = self.core.step()
        self.s_out.send(spikes)
        self.ctrl.send(ctrl)
        if ctrl[3]:
            self.events[:] = self.core.events
            self.stats[:] = [self.core.updates, self.core.steps, self.core.T]


@implements(proc=SpikeAccumulator, protocol=LoihiProtocol)
@requires(CPU)
class SpikeAccumulatorModel(TensorModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    ctrl_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)
    acc: np.ndarray = LavaPyType(np.ndarray, np.int32)
    updates: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.core = AccumulatorCore(p["label"], p["rows"], p["parts"], p["tokens"])
        self.framing = np.zeros(CTRL_WORDS, dtype=np.int32)  # of the step the input left

    def advance(self) -> None:
        synaptic_input = self.a_in.recv()  # the synapse delays by one step: this input
        ctrl = self.ctrl_in.recv()          # belongs to the previous step's framing
        if self.core.apply(synaptic_input, self.framing):
            acc = self.core.acc()
            self.acc[:] = acc.ravel()
            self.updates[0] = self.core.updates
            self.env[self.proc_params["acc_name"]] = acc.reshape(self.proc_params["acc_shape"])
        self.framing = ctrl


@implements(proc=Level, protocol=LoihiProtocol)
@requires(CPU)
class LevelModel(TensorModel):
    counts: np.ndarray = LavaPyType(np.ndarray, np.int32)
    events: np.ndarray = LavaPyType(np.ndarray, np.int64)
    acc: np.ndarray = LavaPyType(np.ndarray, np.int32)
    stats: np.ndarray = LavaPyType(np.ndarray, np.int64)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.layers = []
        for layer in p["layers"]:
            tokens = layer["tokens"]
            self.layers.append({
                "encoder": layer["encoder"],
                "core": EncoderCore(layer["encoder"], p["mode"], layer["threshold"],
                                    parallel=True),
                "synapses": [(s, AccumulatorCore(s["name"], s["rows"], s["parts"], tokens))
                             for s in layer["synapses"]],
                "decodes": [Node.from_json(n) for n in layer["decodes"]],
                "finished": False})

    def advance(self) -> None:
        self.run_ready_nodes()
        for layer in self.layers:
            if not layer["finished"]:
                self.step_layer(layer)

    def step_layer(self, layer: dict) -> None:
        enc, core = layer["encoder"], layer["core"]
        if not core.loaded and enc["x"] in self.env:
            counts, vth = core.load(self.env[enc["x"]])
            self.env.update({enc["counts"]: counts, enc["vth"]: vth})
        spikes, ctrl = core.step()
        if not ctrl[0]:
            return
        spikes = spikes.astype(np.int64)
        for synapse, acc_core in layer["synapses"]:
            acc_core.apply((synapse["matrix"] @ spikes.T).T, ctrl)
        if ctrl[3]:
            for synapse, acc_core in layer["synapses"]:
                self.env[synapse["acc_name"]] = acc_core.acc().reshape(synapse["acc_shape"])
            for node in layer["decodes"]:
                run_node(node, self.env)
            layer["finished"] = True
            if all(ly["finished"] for ly in self.layers):
                self.write_vars()

    def write_vars(self) -> None:
        """Counts, events, acc and stats of every layer, concatenated in layer order."""
        counts, events, accs, stats, updates = [], [], [], [], []
        for layer in self.layers:
            core = layer["core"]
            counts.append(self.env[layer["encoder"]["counts"]].ravel())
            events.append(core.events)
            stats += [core.updates, core.steps, core.T]
            for synapse, acc_core in layer["synapses"]:
                accs.append(self.env[synapse["acc_name"]].ravel())
                updates.append(acc_core.updates)
        for var, parts in ((self.counts, counts), (self.events, events), (self.acc, accs)):
            if parts:
                flat = np.concatenate(parts)
                var[:flat.size] = flat
        self.stats[:len(stats) + len(updates)] = stats + updates
