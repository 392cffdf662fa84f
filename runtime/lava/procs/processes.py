"""The sbcompile Lava Processes (interfaces only; behaviour is in ``models``).

Tensors between processes travel once each: the producer writes the array into the run's tensor
folder and raises a one-word flag on its port (``tensors``); the flag crosses Lava's channel, so
the receiver reads the array only after it is complete. Ports stay one word wide whatever the
tensor, and a step costs the same for a 16-element vector and a 3x320x320 feature map. Spike
ports carry int32 payloads, one per neuron; control ports carry int32 framing words
``[active, token, weight, last]`` (token -1: every token at once). Graph inputs a process reads
arrive as ``preloaded`` parameters. What a process produces for the caller (recorded outputs,
counts, acc, event counters) goes to its result file; ``done`` turns 1 once it is there.
"""
from __future__ import annotations

from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

CTRL_WORDS = 4  # active, token index (-1: all), step weight, last step of the tensor
FLAG_WORDS = 1  # a tensor port's message: 1.0 once the tensor is in the tensor folder


class TensorProcess(AbstractProcess):
    """A process with tensor in-ports ``in_0..`` and out-ports ``out_0..``. ``in_specs``,
    ``out_specs`` and ``record_specs`` are ``(value name, shape, dtype)`` triples."""

    def __init__(self, *, in_specs: list, out_specs: list, record_specs: list,
                 **params) -> None:
        super().__init__(in_specs=in_specs, out_specs=out_specs, record_specs=record_specs,
                         **params)
        for i in range(len(in_specs)):
            setattr(self, f"in_{i}", InPort(shape=(FLAG_WORDS,)))
        for j in range(len(out_specs)):
            setattr(self, f"out_{j}", OutPort(shape=(FLAG_WORDS,)))
        self.done = Var(shape=(1,), init=0)


class Compute(TensorProcess):
    """Runs IR nodes (``nodes``, with ``params``) by the reference kernels as their inputs
    arrive: work for the chip's embedded processors."""


class SpikeEncoder(TensorProcess):
    """Integer integrate-and-fire encoder neurons (one per channel of a token, or per channel
    and position of a sample): spikes on ``s_out`` and window framing on ``ctrl``."""

    def __init__(self, *, neurons: int, **params) -> None:
        super().__init__(neurons=neurons, **params)
        self.s_out = OutPort(shape=(neurons,))
        self.ctrl = OutPort(shape=(CTRL_WORDS,))


class SharedSynapse(TensorProcess):
    """A synapse layer that holds its int8 weights once (a convolution's kernel, a grouped or
    fan-in-split linear layer's matrix) and applies them to each step's spikes: one step of
    delay, like Lava's Dense."""

    def __init__(self, *, cols: int, rows: int, **params) -> None:
        super().__init__(cols=cols, rows=rows, **params)
        self.s_in = InPort(shape=(cols,))
        self.a_out = OutPort(shape=(rows,))


class SpikeAccumulator(TensorProcess):
    """Integer accumulator neurons behind one synapse process: they integrate the synaptic input
    over each window with the step weights on ``ctrl``, recovering acc."""

    def __init__(self, *, rows: int, **params) -> None:
        super().__init__(rows=rows, **params)
        self.a_in = InPort(shape=(rows,))
        self.ctrl_in = InPort(shape=(CTRL_WORDS,))


class Level(TensorProcess):
    """The fused form of one level: compute nodes, and spike layers (encoder, synapses,
    accumulators, decodes) without synaptic delay, every token in the same window."""
