"""The sbcompile Lava Processes (interfaces only; behaviour is in ``models``).

Tensors between processes travel as one message each on a float64 port of size ``1 + size``: a
valid flag, then the values (exact for float32, int32, bool and small int64). Spike ports carry
int32 payloads; control ports carry int32 framing words ``[active, token, weight, last]`` (token
-1: every token at once). Graph inputs a process reads arrive as ``preloaded`` parameters; the
graph outputs it produces go to its ``record`` Var, and ``done`` turns 1 once they are there.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

CTRL_WORDS = 4  # active, token index (-1: all), step weight, last step of the tensor
ENCODER_STATS = 3  # neuron updates, active steps, window T


def size_of(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def message_size(shape) -> int:
    return size_of(shape) + 1


class TensorProcess(AbstractProcess):
    """A process with tensor in-ports ``in_0..`` and out-ports ``out_0..``. ``in_specs``,
    ``out_specs`` and ``record_specs`` are ``(value name, shape, dtype)`` triples."""

    def __init__(self, *, in_specs: list, out_specs: list, record_specs: list,
                 **params) -> None:
        super().__init__(in_specs=in_specs, out_specs=out_specs, record_specs=record_specs,
                         **params)
        for i, (_, shape, _) in enumerate(in_specs):
            setattr(self, f"in_{i}", InPort(shape=(message_size(shape),)))
        for j, (_, shape, _) in enumerate(out_specs):
            setattr(self, f"out_{j}", OutPort(shape=(message_size(shape),)))
        total = sum(size_of(shape) for _, shape, _ in record_specs)
        self.record = Var(shape=(max(total, 1),), init=0)
        self.done = Var(shape=(1,), init=0)


class Compute(TensorProcess):
    """Runs IR nodes (``nodes``, with ``params``) by the reference kernels as their inputs
    arrive: work for the chip's embedded processors."""


class SpikeEncoder(TensorProcess):
    """Integer integrate-and-fire encoder neurons (one per channel of a token): spikes on
    ``s_out`` and window framing on ``ctrl`` for the accumulators."""

    def __init__(self, *, neurons: int, tokens: int, **params) -> None:
        super().__init__(neurons=neurons, tokens=tokens, **params)
        self.s_out = OutPort(shape=(neurons,))
        self.ctrl = OutPort(shape=(CTRL_WORDS,))
        self.counts = Var(shape=(tokens * neurons,), init=0)
        self.events = Var(shape=(neurons,), init=0)
        self.stats = Var(shape=(ENCODER_STATS,), init=0)


class SpikeAccumulator(TensorProcess):
    """Integer accumulator neurons behind one Lava synapse process: they integrate the synaptic
    input over each window with the step weights on ``ctrl``, recovering acc."""

    def __init__(self, *, rows: int, acc_size: int, **params) -> None:
        super().__init__(rows=rows, acc_size=acc_size, **params)
        self.a_in = InPort(shape=(rows,))
        self.ctrl_in = InPort(shape=(CTRL_WORDS,))
        self.acc = Var(shape=(acc_size,), init=0)
        self.updates = Var(shape=(1,), init=0)


class Level(TensorProcess):
    """The fused form of one level: compute nodes, and spike layers (encoder, synapses,
    accumulators, decodes) without synaptic delay, every token in the same window. Counts,
    events and acc of all its layers are concatenated in layer order."""

    def __init__(self, *, counts_size: int, events_size: int, acc_size: int, n_encoders: int,
                 n_synapses: int, **params) -> None:
        super().__init__(counts_size=counts_size, events_size=events_size, acc_size=acc_size,
                         n_encoders=n_encoders, n_synapses=n_synapses, **params)
        self.counts = Var(shape=(max(counts_size, 1),), init=0)
        self.events = Var(shape=(max(events_size, 1),), init=0)
        self.acc = Var(shape=(max(acc_size, 1),), init=0)
        self.stats = Var(shape=(max(ENCODER_STATS * n_encoders + n_synapses, 1),), init=0)
