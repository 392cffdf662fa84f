"""Weight-shared synapses: one step's spikes through a layer's int8 weights, held once.

A convolution correlates the step's spike map with its kernel, tap by tap (each tap one matrix
product over the channels of a group, or one multiply for depthwise kernels); a linear layer is
one matrix product per weight group. Products run in floating point, which is exact for integers
as long as every partial sum is: a partial sum is at most (entries of a partial row) x max |w| x
max |spike| in magnitude, whatever the order of summation, so a step runs in float32 when that
bound is below 2^24 (unit spikes; the mapping keeps a partial row within the 24-bit state) and
in float64 otherwise (below 2^53: payloads < 2^24, weights < 2^8, entries < 2^20). The result is
the synaptic input of the accumulator neurons, per token (or sample) and row ``r * parts + p``
for output r and fan-in partial p (``connectivity``).
"""
from __future__ import annotations

import math

import numpy as np

from sbcompile.runtime.lava.connectivity import Geometry, partial_masks


class SynapseKernel:
    """The synapses of one spike layer: ``apply(spikes [tokens, cols])`` gives the synaptic
    input [tokens, rows * parts] (int64)."""

    def __init__(self, geometry: Geometry, weight: np.ndarray, parts: int) -> None:
        self.geometry = geometry
        self.parts = parts
        flat = weight.reshape(weight.shape[0], -1)
        if geometry.op == "spike_linear":  # [N, K] -> [G, N, group]
            n, k = weight.shape
            flat = weight.reshape(n, geometry.group, k // geometry.group).transpose(1, 0, 2)
        self.flat, self.shape = flat, weight.shape
        self.masks = partial_masks(geometry.row_entries, parts)
        self.exact_below = max(sl.stop - sl.start for sl in self.masks) * \
            int(np.abs(weight.astype(np.int64)).max(initial=0))  # x max |spike| bounds a sum
        self.weights: dict[type, list] = {}  # per float type (made when first needed)
        self._weights(np.float32)

    def _weights(self, dtype: type) -> list:
        """Per partial, the weights in ``dtype``, zero outside the partial's entries."""
        if dtype not in self.weights:
            self.weights[dtype] = []
            for sl in self.masks:
                w = np.zeros(self.flat.shape, dtype=dtype)
                w[..., sl] = self.flat[..., sl]
                self.weights[dtype].append(self._taps(w.reshape(self.shape))
                                           if self.geometry.op == "spike_conv" else w)
        return self.weights[dtype]

    def _taps(self, w: np.ndarray) -> list[tuple[tuple, np.ndarray]]:
        """A conv weight as (tap, contiguous [G, O/G, C/G] matrix) for its nonzero taps (BLAS
        takes only contiguous operands)."""
        groups = self.geometry.group
        shape = (groups, w.shape[0] // groups, w.shape[1])
        taps = [(tap, np.ascontiguousarray(w[(slice(None), slice(None)) + tap]).reshape(shape))
                for tap in np.ndindex(*w.shape[2:])]
        return [(tap, wk) for tap, wk in taps if wk.any()]

    def apply(self, spikes: np.ndarray) -> np.ndarray:
        top = int(np.abs(spikes).max(initial=0))
        dtype = np.float32 if self.exact_below * top < 1 << 24 else np.float64
        x = np.asarray(spikes, dtype=dtype)
        tokens = x.shape[0]
        apply = self._conv if self.geometry.op == "spike_conv" else self._linear
        out = [apply(x, w).reshape(tokens, -1) for w in self._weights(dtype)]
        stacked = out[0][..., None] if len(out) == 1 else np.stack(out, axis=-1)
        return stacked.reshape(tokens, -1).astype(np.int64)

    def _linear(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        g, _, width = w.shape  # x [T, K] -> [G, T, width] @ [G, width, N] -> [T, G, N]
        xg = np.ascontiguousarray(x.reshape(x.shape[0], g, width).transpose(1, 0, 2))
        return np.matmul(xg, np.ascontiguousarray(w.transpose(0, 2, 1))).transpose(1, 0, 2)

    def _conv(self, x: np.ndarray, taps: list[tuple[tuple, np.ndarray]]) -> np.ndarray:
        geo = self.geometry
        nd = len(geo.in_shape) - 1
        x = x.reshape((x.shape[0],) + geo.in_shape)
        x = np.pad(x, [(0, 0), (0, 0)] + [(geo.pads[i], geo.pads[i + nd]) for i in range(nd)])
        out = geo.out_shape[1:]
        groups, (o_ch, c_per_group) = geo.group, geo.weight_shape[:2]
        o_per_group = o_ch // groups
        positions = math.prod(out)
        y = np.zeros((x.shape[0], groups, o_per_group, positions), dtype=x.dtype)
        depthwise = c_per_group == 1 and o_per_group == 1
        for tap, wk in taps:
            window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                           for t, d, o, s in zip(tap, geo.dilations, out, geo.strides))
            xs = x[(slice(None), slice(None)) + window].reshape(
                x.shape[0], groups, c_per_group, positions)
            if depthwise:
                y += wk * xs
            else:
                y += np.matmul(wk, xs)
        return y.reshape((x.shape[0], o_ch) + tuple(out))
