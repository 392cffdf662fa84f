"""Synaptic connectivity of spike layers, described by the weight and the geometry, never expanded.

A layer's accumulator neurons are its outputs of one token (linear: [G, N] for G weight groups)
or one sample (conv: [O, *out]); its input neurons are one token's channels (linear) or one
sample's channels and positions (conv). A convolution shares its kernel across positions, as a
chip does: the synapse count, fan-in and fan-out of every neuron follow from the kernel shape,
strides, pads and dilations (per spatial axis, then multiplied: the rules are separable). Every
structural synapse counts, zero weights too: a zero weight still occupies synaptic memory, and
the fan-out of an input neuron is the number of synapses it drives (what op counts charge).

Fan-in split: P partial rows per output, partial p summing the p-th contiguous slice of the
row's weight entries (linear: the group's inputs; conv: the flattened [C/group, *kernel]
entries, channel-major), so each partial stays within the neuron state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sbcompile.ir.shapes import RULES


@dataclass(frozen=True)
class Geometry:
    op: str                        # spike_linear | spike_conv
    weight_shape: tuple[int, ...]  # linear [N, K]; conv [O, C/group, *kernel]
    in_shape: tuple[int, ...]      # conv: one sample [C, *spatial]; linear: ()
    out_shape: tuple[int, ...]     # acc of one token/sample: linear [G, N]; conv [O, *out]
    group: int                     # weight groups (linear: K / group_size; conv: group)
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()     # [begin..., end...]
    dilations: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        """Accumulator neurons of one token or sample (before any fan-in split)."""
        return math.prod(self.out_shape)

    @property
    def cols(self) -> int:
        """Input neurons of one token or sample."""
        return self.weight_shape[1] if self.op == "spike_linear" else math.prod(self.in_shape)

    @property
    def row_entries(self) -> int:
        """Weight entries of one output row: the group's inputs, or C/group x kernel volume."""
        if self.op == "spike_linear":
            return self.weight_shape[1] // self.group
        return math.prod(self.weight_shape[1:])

    def _taps(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per spatial axis: (valid taps per output index, output taps reaching each input
        index)."""
        nd = len(self.in_shape) - 1
        axes = []
        for i in range(nd):
            size, k = self.in_shape[1 + i], self.weight_shape[2 + i]
            out = self.out_shape[1 + i]
            where = (np.arange(out)[:, None] * self.strides[i] - self.pads[i]
                     + np.arange(k)[None, :] * self.dilations[i])  # [out, k] input index
            valid = (where >= 0) & (where < size)
            axes.append((valid.sum(axis=1), np.bincount(where[valid], minlength=size)))
        return axes

    def fan_in(self) -> int:
        """Largest number of synapses of one accumulator neuron."""
        if self.op == "spike_linear":
            return self.row_entries
        return self.weight_shape[1] * math.prod(int(v.max(initial=0)) for v, _ in self._taps())

    def synapses(self) -> int:
        """Structural synapses of the layer (one token or sample)."""
        if self.op == "spike_linear":
            return self.rows * self.row_entries
        per_position = math.prod(int(v.sum()) for v, _ in self._taps())
        return self.weight_shape[0] * self.weight_shape[1] * per_position

    def fan_out(self) -> np.ndarray:
        """Synapses per input neuron (int64 [cols])."""
        if self.op == "spike_linear":
            return np.full(self.cols, self.weight_shape[0], dtype=np.int64)
        reach = np.ones((), dtype=np.int64)
        for _, r in self._taps():
            reach = np.multiply.outer(reach, r.astype(np.int64))
        per_channel = self.weight_shape[0] // self.group
        return np.broadcast_to(reach * per_channel, self.in_shape).ravel().copy()


def conv_out_shape(weight_shape: tuple[int, ...], attrs: dict,
                   in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """[O, *out] of one sample, by the op table's conv shape rule."""
    (shape,) = RULES["spike_conv"](attrs, [(1, *in_shape), tuple(weight_shape)], [None, None])
    return tuple(int(d) for d in shape[1:])


def layer_geometry(op: str, weight_shape: tuple[int, ...], attrs: dict,
                   in_shape: tuple[int, ...]) -> Geometry:
    """The geometry of a spike_linear or spike_conv node (``attrs`` with the op's defaults,
    ``in_shape`` the per-sample input of a conv)."""
    weight_shape = tuple(int(d) for d in weight_shape)
    if op == "spike_linear":
        n, k = weight_shape
        groups = k // (attrs.get("group_size") or k)
        return Geometry(op, weight_shape, (), (groups, n), groups)
    nd = len(weight_shape) - 2
    return Geometry(op, weight_shape, tuple(in_shape),
                    conv_out_shape(weight_shape, attrs, tuple(in_shape)), int(attrs["group"]),
                    tuple(attrs["strides"] or [1] * nd), tuple(attrs["pads"] or [0] * (2 * nd)),
                    tuple(attrs["dilations"] or [1] * nd))


def partial_masks(entries: int, parts: int) -> list[slice]:
    """The contiguous slices of a row's ``entries`` weight entries summed by each partial."""
    width = max(-(-entries // parts), 1)
    return [slice(p * width, min((p + 1) * width, entries)) for p in range(parts)]
