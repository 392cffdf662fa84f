"""The neuron dynamics the Lava process models run (plain numpy, no Lava).

- ``IntegerIFEncoder``: integrate-and-fire neurons with an integer membrane and reset by
  subtraction, firing a charge out in one of the signalling modes.
- ``EncoderCore``: one spike encoder over a tensor: the adaptive threshold and integer charge of
  ``spike_encode`` (the reference kernel itself, so counts are bit-exact), then each token's
  window of T steps, one token after another, with the spikes' framing for the accumulators.
- ``AccumulatorCore``: integer accumulator neurons recovering ``acc`` = sum_t w_t * (W @ s_t),
  each neuron state held to the 24-bit Loihi 2 width.
"""
from __future__ import annotations

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Node
from sbcompile.runtime.lava.coding import check_mode, step_weight, window_steps
from sbcompile.runtime.lava.mapping import STATE_MAX
from sbcompile.ir.ops import node_attrs
from sbcompile.runtime.reference_spike import spike_encode

INT32_MAX = np.iinfo(np.int32).max


class IntegerIFEncoder:
    """Integer integrate-and-fire neurons with reset by subtraction, one per input channel.

    ``charge(q)`` loads a token's integer charge (the count, in units of the threshold);
    ``fire(t)`` emits step t's spikes and subtracts what they carry: graded fires the whole
    membrane at t = 0, unary fires sign(v) while v != 0, bitwise fires sign(v) * bit t of |v|
    with weight 2^t. After the window the membrane is zero.
    """

    def __init__(self, mode: str, size: int) -> None:
        self.mode = check_mode(mode)
        self.v = np.zeros(size, dtype=np.int32)  # charges are counts, bounded below 2^23

    def charge(self, q: np.ndarray) -> None:
        self.v = q.astype(np.int32)

    def fire(self, t: int) -> np.ndarray:
        v = self.v
        if self.mode == "graded":
            spikes, self.v = (v, np.zeros_like(v)) if t == 0 else (np.zeros_like(v), v)
            return spikes
        if self.mode == "unary":
            spikes = np.sign(v)
            v -= spikes
        else:  # bits below t are spent, so v >> t is exact and its parity is bit t of |v|
            spikes = v >> t
            spikes &= 1
            spikes *= np.sign(v)
            v -= spikes << t
        return spikes

    def residue(self) -> int:
        """Largest |membrane| left; zero once a window has carried its charge."""
        return int(np.abs(self.v).max(initial=0))


class EncoderCore:
    """One spike encoder streaming a tensor through its neurons.

    ``encoder`` is the program's encoder entry; ``threshold`` the static threshold or None.
    Sequential (``parallel=False``): the tokens pass one window of T steps after another, as
    through one population of neurons. Parallel: every token has its own neurons and all share
    one window. After ``load(x)``, each ``step()`` returns that step's spikes ([neurons], or
    [tokens, neurons] in parallel) and their framing ``[active, token (-1: all), step weight,
    last step]``; steps outside the windows return zeros.
    """

    def __init__(self, encoder: dict, mode: str, threshold: np.ndarray | None,
                 parallel: bool) -> None:
        self.name = encoder["name"]
        self.mode = mode
        self.parallel = parallel
        self.attrs = node_attrs(Node.from_json(encoder["node"]))
        self.threshold = threshold
        self.bound = int(encoder["count_bound"])
        self.payload_max = (1 << (int(encoder["message_bits"]) - 1)) - 1
        self.neurons = int(encoder["neurons"])
        self.neuron = IntegerIFEncoder(mode, self.neurons)
        self.events = np.zeros(self.neurons, dtype=np.int64)
        self.updates = 0
        self.steps = 0
        self.T = 0
        self.total_steps = 0
        self.loaded = False
        self.charges = np.zeros((0, self.neurons), dtype=np.int32)

    def load(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Threshold and integer charge of the whole tensor; returns (counts, vth) exactly as the
        IR's spike_encode."""
        counts, vth = spike_encode(self.attrs, x, self.threshold)
        top = int(np.abs(counts).max(initial=0))
        if top > self.bound:
            raise SbcError(f"encoder '{self.name}': a count of {top} exceeds the bound "
                           f"{self.bound} its synapses were sized for (the threshold hit vth_max);"
                           " set max_count")
        self.charges = counts.reshape(-1, self.neurons).astype(np.int32)
        self.T = window_steps(counts, self.mode)
        self.total_steps = self.T * (1 if self.parallel else self.charges.shape[0])
        self.loaded = True
        return counts, vth

    def release(self) -> None:
        """Drop the charges and membranes of a finished tensor (its counts are the result)."""
        self.charges = np.zeros((0, self.neurons), dtype=np.int32)
        self.neuron.v = np.zeros(0, dtype=np.int32)

    def idle(self) -> np.ndarray:
        shape = self.charges.shape if self.parallel else (self.neurons,)
        return np.zeros(shape, dtype=np.int32)

    def step(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.loaded or self.steps >= self.total_steps:
            return self.idle(), np.zeros(4, dtype=np.int32)
        window, t = divmod(self.steps, self.T)
        if t == 0:
            self.neuron.charge(self.charges if self.parallel else self.charges[window])
        spikes = self.neuron.fire(t)
        if t == self.T - 1 and self.neuron.v.any():
            raise SbcError(f"encoder '{self.name}': a window of {self.T} steps left charge "
                           f"{self.neuron.residue()} unsent")
        if self.mode == "graded" and int(np.abs(spikes).max(initial=0)) > self.payload_max:
            raise SbcError(f"encoder '{self.name}': a spike payload exceeds its message width")
        self.events += np.count_nonzero(spikes.reshape(-1, self.neurons), axis=0)
        self.updates += spikes.size
        self.steps += 1
        last = self.steps == self.total_steps
        token = -1 if self.parallel else window
        return spikes, np.array([1, token, step_weight(self.mode, t), last], dtype=np.int32)


class AccumulatorCore:
    """Integer accumulator neurons of one synapse layer, ``rows`` = outputs x fan-in split, for
    ``tokens`` tokens."""

    def __init__(self, name: str, rows: int, parts: int, tokens: int) -> None:
        self.name = name
        self.rows = rows
        self.parts = parts
        self.state = np.zeros((tokens, rows), dtype=np.int64)
        self.updates = 0

    def apply(self, synaptic_input: np.ndarray, ctrl: np.ndarray) -> bool:
        """Integrate one step's synaptic input ([rows], or [tokens, rows] for token -1) under
        its framing; True on the tensor's last step."""
        active, token, weight, last = (int(c) for c in ctrl)
        if not active:
            return False
        target = self.state if token < 0 else self.state[token]
        target += synaptic_input if weight == 1 else synaptic_input.astype(np.int64) * weight
        if target.size and (int(target.max()) > STATE_MAX or int(target.min()) < -STATE_MAX):
            raise SbcError(f"accumulator '{self.name}': a partial sum exceeds the 24-bit neuron "
                           "state")
        self.updates += target.size
        return bool(last)

    def acc(self) -> np.ndarray:
        """acc per token (int32): the fan-in partials of each output added."""
        total = self.state if self.parts == 1 else \
            self.state.reshape(self.state.shape[0], -1, self.parts).sum(axis=-1)
        if total.size and max(int(total.max()), -int(total.min())) > INT32_MAX:
            raise SbcError(f"accumulator '{self.name}': acc exceeds int32")
        return total.astype(np.int32)
