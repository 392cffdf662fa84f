"""ProcessModels of the sbcompile Lava Processes: Python models on the Loihi sync protocol.

Every model is a small dataflow engine over ``env`` (value name -> array): each step it receives
the tensors that arrived, advances (compute nodes whose inputs are all present run at once;
neurons take one step), sends each output tensor once it exists, and, once everything it owes
the caller exists (its recorded graph outputs; an encoder's counts; an accumulator's acc), writes
its result file and sets ``done``. An exception is written to the run's failure record before
Lava sees it. Tensor ports vary per instance, so ``model_for`` derives a model class declaring
the ports an instance has; the runner pins it to that instance.
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
from sbcompile.ir.ops import node_attrs
from sbcompile.runtime.lava.failure import record_failure
from sbcompile.runtime.lava.neurons import AccumulatorCore, EncoderCore
from sbcompile.runtime.lava.procs.processes import (CTRL_WORDS, Compute, Level, SharedSynapse,
                                                     SpikeAccumulator, SpikeEncoder)
from sbcompile.runtime.lava.synapses import SynapseKernel
from sbcompile.runtime.lava.tensors import get_tensor, mark_finished, put_result, put_tensor
from sbcompile.runtime.reference import KERNELS

_DERIVED: dict[tuple, type] = {}
_RAISED, _LOWERED = np.ones(1), np.zeros(1)


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

    done: np.ndarray = LavaPyType(np.ndarray, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.run_dir = p["run_dir"]
        self.env: dict[str, np.ndarray] = {**p.get("params", {}), **p["preloaded"]}
        self.pending = [Node.from_json(n) for n in p.get("nodes", [])]
        self.unsent = {name for name, _, _ in p["out_specs"]}
        self.results: dict[str, np.ndarray] = {}  # what the caller reads, besides records
        self.reported = False

    def run_spk(self) -> None:
        try:
            self.receive()
            self.advance()
            self.send_ready()
            self.report()
        except Exception as exc:
            record_failure(self.run_dir, self.proc_params["label"], exc)
            raise

    def advance(self) -> None:
        self.run_ready_nodes()

    def complete(self) -> bool:
        """Whether this process has everything it owes the caller, besides its records."""
        return True

    def receive(self) -> None:
        for i, (name, _, dtype) in enumerate(self.proc_params["in_specs"]):
            flag = getattr(self, f"in_{i}").recv()
            if flag[0] == 1 and name not in self.env:
                self.env[name] = get_tensor(self.run_dir, name).astype(dtype, copy=False)

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
        for j, (name, _, _) in enumerate(self.proc_params["out_specs"]):
            port = getattr(self, f"out_{j}")
            if name in self.unsent and name in self.env:
                put_tensor(self.run_dir, name, self.env[name])
                self.unsent.discard(name)
                port.send(_RAISED)
            else:
                port.send(_LOWERED)

    def report(self) -> None:
        specs = self.proc_params["record_specs"]
        owed = specs or self.results
        if self.reported or not owed or not all(name in self.env for name, _, _ in specs) \
                or not self.complete():
            return
        records = {f"record:{name}": self.env[name] for name, _, _ in specs}
        put_result(self.run_dir, self.proc_params["key"], {**records, **self.results})
        self.reported = True
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


def encoder_results(enc: dict, core: EncoderCore, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {f"counts:{enc['counts']}": counts, f"events:{enc['name']}": core.events,
            f"stats:{enc['name']}": np.array([core.updates, core.steps, core.T], np.int64)}


@implements(proc=SpikeEncoder, protocol=LoihiProtocol)
@requires(CPU)
class SpikeEncoderModel(TensorModel):
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    ctrl: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.enc = proc_params["encoder"]
        self.core = EncoderCore(self.enc, proc_params["mode"], proc_params["threshold"],
                                parallel=False)

    def advance(self) -> None:
        if not self.core.loaded and self.enc["x"] in self.env:
            counts, vth = self.core.load(self.env[self.enc["x"]])
            self.env.update({self.enc["counts"]: counts, self.enc["vth"]: vth})
        spikes, ctrl = self.core.step()
        self.s_out.send(spikes)
        self.ctrl.send(ctrl)
        if ctrl[3]:
            self.results = encoder_results(self.enc, self.core, self.env[self.enc["counts"]])
            mark_finished(self.run_dir, self.enc["name"])

    def complete(self) -> bool:
        return bool(self.results)


@implements(proc=SharedSynapse, protocol=LoihiProtocol)
@requires(CPU)
class SharedSynapseModel(TensorModel):
    """Applies the layer's weights (held once) to the spikes of the step, delivering them one
    step later; steps without spikes cost nothing."""
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.kernel: SynapseKernel = proc_params["kernel"]
        self.zeros = np.zeros(proc_params["rows"], dtype=np.int32)
        self.buffer = self.zeros

    def advance(self) -> None:
        self.a_out.send(self.buffer)
        spikes = self.s_in.recv()
        self.buffer = (self.kernel.apply(spikes[None])[0].astype(np.int32) if spikes.any()
                       else self.zeros)


@implements(proc=SpikeAccumulator, protocol=LoihiProtocol)
@requires(CPU)
class SpikeAccumulatorModel(TensorModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    ctrl_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.core = AccumulatorCore(p["label"], p["rows"], p["parts"], p["tokens"])
        self.framing = np.zeros(CTRL_WORDS, dtype=np.int32)  # of the step the input left

    def advance(self) -> None:
        synaptic_input = self.a_in.recv()  # the synapse delays by one step: this input
        ctrl = self.ctrl_in.recv()          # belongs to the previous step's framing
        if self.core.apply(synaptic_input, self.framing):
            acc = self.core.acc().reshape(self.proc_params["acc_shape"])
            self.env[self.proc_params["acc_name"]] = acc
            self.results = {f"acc:{self.proc_params['acc_name']}": acc,
                            "updates": np.array([self.core.updates], np.int64)}
        self.framing = ctrl

    def complete(self) -> bool:
        return bool(self.results)


@implements(proc=Level, protocol=LoihiProtocol)
@requires(CPU)
class LevelModel(TensorModel):
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

    def complete(self) -> bool:
        return all(layer["finished"] for layer in self.layers)

    def step_layer(self, layer: dict) -> None:
        enc, core = layer["encoder"], layer["core"]
        if not core.loaded and enc["x"] in self.env:
            counts, vth = core.load(self.env[enc["x"]])
            self.env.update({enc["counts"]: counts, enc["vth"]: vth})
        spikes, ctrl = core.step()
        if not ctrl[0]:
            return
        for synapse, acc_core in layer["synapses"]:
            synaptic_input = (synapse["kernel"].apply(spikes) if spikes.any() else
                              np.zeros((spikes.shape[0], synapse["rows"]), dtype=np.int64))
            acc_core.apply(synaptic_input, ctrl)
        if ctrl[3]:
            for synapse, acc_core in layer["synapses"]:
                acc = acc_core.acc().reshape(synapse["acc_shape"])
                self.env[synapse["acc_name"]] = acc
                self.results[f"acc:{synapse['acc_name']}"] = acc
                self.results[f"updates:{synapse['name']}"] = np.array([acc_core.updates],
                                                                      np.int64)
            for node in layer["decodes"]:
                run_node(node, self.env)
            self.results.update(encoder_results(enc, core, self.env[enc["counts"]]))
            layer["finished"] = True
            mark_finished(self.run_dir, enc["name"])
            layer["synapses"] = []  # the accumulator states are spent: acc holds the result
            core.release()
