"""Weight-shared synapses: one step's spikes through a layer's int8 weights, held once.

A convolution correlates the step's spike map with its kernel, tap by tap (each tap one matrix
product over the channels of a group, or one multiply for depthwise kernels, on a shifted view of
all samples' maps: ``ConvLayout``), leaving out the channels that carry no spike in the step; a
linear layer is one matrix product per weight group. Products run in floating point, which is exact for integers
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

CACHE_BYTES = 1 << 20  # a span of partial sums and inputs that stays in cache


class SynapseKernel:
    """The synapses of one spike layer: ``apply(spikes [tokens, cols])`` gives the synaptic
    input [tokens, rows * parts] (int64; int32 for a convolution step within the float32
    bound)."""

    def __init__(self, geometry: Geometry, weight: np.ndarray, parts: int) -> None:
        self.geometry = geometry
        self.parts = parts
        flat = weight.reshape(weight.shape[0], -1)
        if geometry.op == "spike_linear":  # [N, K] -> [G, N, group]
            n, k = weight.shape
            flat = weight.reshape(n, geometry.group, k // geometry.group).transpose(1, 0, 2)
        self.flat, self.shape = flat, weight.shape
        self.layout = ConvLayout(geometry) if geometry.op == "spike_conv" else None
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

    def _taps(self, w: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """A conv weight as (phase, offset, contiguous [G, O/G, C/G] matrix) for its nonzero
        taps (``ConvLayout``; BLAS takes only contiguous operands)."""
        groups = self.geometry.group
        shape = (groups, w.shape[0] // groups, w.shape[1])
        taps = [(self.layout.tap(tap),
                 np.ascontiguousarray(w[(slice(None), slice(None)) + tap]).reshape(shape))
                for tap in np.ndindex(*w.shape[2:])]
        return [(phase, offset, wk) for (phase, offset), wk in taps if wk.any()]

    def apply(self, spikes: np.ndarray) -> np.ndarray:
        top = int(np.abs(spikes).max(initial=0))
        dtype = np.float32 if self.exact_below * top < 1 << 24 else np.float64
        tokens = spikes.shape[0]
        if self.geometry.op == "spike_conv":
            return self._conv(spikes, dtype)
        x = np.asarray(spikes, dtype=dtype)
        out = [self._linear(x, w).reshape(tokens, -1) for w in self._weights(dtype)]
        stacked = out[0][..., None] if len(out) == 1 else np.stack(out, axis=-1)
        return stacked.reshape(tokens, -1).astype(np.int64)

    def _linear(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        g, _, width = w.shape  # x [T, K] -> [G, T, width] @ [G, width, N] -> [T, G, N]
        xg = np.ascontiguousarray(x.reshape(x.shape[0], g, width).transpose(1, 0, 2))
        return np.matmul(xg, np.ascontiguousarray(w.transpose(0, 2, 1))).transpose(1, 0, 2)

    def _conv(self, spikes: np.ndarray, dtype: type) -> np.ndarray:
        """Event-driven over channels: only the input channels that carry a spike this step
        (in any sample) enter the products, when the kernel lets them be picked (one group, or
        depthwise); per tap, one product of the tap's matrix with the tap's shifted view of all
        samples' maps (``ConvLayout``), accumulated in ``dtype``."""
        geo, layout, tokens = self.geometry, self.layout, spikes.shape[0]
        o_ch, c_per_group = geo.weight_shape[:2]
        depthwise = geo.group > 1 and c_per_group == 1 and o_ch == geo.group
        x, active = layout.load(spikes, dtype, pick=geo.group == 1 or depthwise)
        channels = x.shape[1] if active is None else len(active)
        rows = channels if depthwise else o_ch
        width = layout.width(tokens)
        result = np.zeros((tokens, o_ch) + layout.out + (self.parts,),
                          dtype=np.int32 if dtype == np.float32 else np.int64)
        span = max(512, CACHE_BYTES // (x.itemsize * (2 * rows + channels)))
        for p, taps in enumerate(self._weights(dtype)):
            if active is not None:
                taps = [(phase, offset, wk[active] if depthwise else wk[:, :, active])
                        for phase, offset, wk in taps]
            y = np.empty((rows, width), dtype=dtype)
            for start in range(0, width, span):
                stop = min(width, start + span)
                y[:, start:stop] = self._products(x[:, :channels], taps, start, stop,
                                                  rows, depthwise)
            layout.store(y, tokens, result[..., p], active if depthwise else None)
        return result.reshape(tokens, -1)

    def _products(self, x: np.ndarray, taps: list, start: int, stop: int, rows: int,
                  depthwise: bool) -> np.ndarray:
        """Columns start:stop of the layer's products, summed over the taps (a span small
        enough for the partial sums to stay in cache)."""
        groups = self.geometry.group
        y = np.zeros((rows, stop - start), dtype=x.dtype)
        part = np.empty_like(y)
        for phase, offset, wk in taps:
            xs = x[phase, :, offset + start:offset + stop]
            if depthwise:
                np.multiply(xs, wk.reshape(-1, 1), out=part)
            else:
                np.matmul(wk, xs.reshape(groups, -1, stop - start),
                          out=part.reshape(groups, -1, stop - start))
            y += part
        return y


class ConvLayout:
    """Where a convolution's input spikes sit so that every tap is one product over a shifted
    view, with no copy per tap: the padded map of each channel, split by stride phase (padded
    index p on an axis of stride s goes to phase p mod s at position p // s), holds all samples
    one after another in one row per channel. Tap t reads phase (t * d) mod s from offset
    (t * d) // s on every axis, so its view is the row from one flat offset; positions beyond an
    output's extent (the phase's margin, the gap between samples) are computed and dropped."""

    def __init__(self, geometry: Geometry) -> None:
        geo = self.geometry = geometry
        nd = len(geo.in_shape) - 1
        self.channels, self.size = geo.in_shape[0], geo.in_shape[1:]
        self.out = geo.out_shape[1:]
        self.pads_lo = geo.pads[:nd]
        padded = [n + geo.pads[i] + geo.pads[i + nd] for i, n in enumerate(self.size)]
        self.phase_shape = tuple(-(-p // s) for p, s in zip(padded, geo.strides))
        self.phases = math.prod(geo.strides)
        self.tail = max((sum(off * st for off, st in zip(self._tap_offsets(tap),
                                                         self._flat_strides()))
                         for tap in np.ndindex(*geo.weight_shape[2:])), default=0)
        self.buffers: dict[tuple, np.ndarray] = {}

    def _flat_strides(self) -> list[int]:
        return [math.prod(self.phase_shape[i + 1:]) for i in range(len(self.phase_shape))]

    def _tap_offsets(self, tap: tuple) -> list[int]:
        return [t * d // s for t, d, s in zip(tap, self.geometry.dilations, self.geometry.strides)]

    def tap(self, tap: tuple) -> tuple[int, int]:
        """(phase, flat offset) of a kernel tap."""
        geo = self.geometry
        phase = int(np.ravel_multi_index([t * d % s for t, d, s in
                                          zip(tap, geo.dilations, geo.strides)], geo.strides))
        return phase, sum(o * st for o, st in zip(self._tap_offsets(tap), self._flat_strides()))

    def width(self, tokens: int) -> int:
        return tokens * math.prod(self.phase_shape)

    def load(self, spikes: np.ndarray, dtype: type, pick: bool
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """The step's spikes [tokens, C * positions] in the layout [phases, C, width + tail]
        (a buffer per batch size and type, reused: its pads are never written, and every row
        has the same pads, so any channel may sit in any row). With ``pick``, only the channels
        carrying a spike are written, to the first rows, and returned as ``active`` (None when
        all are)."""
        tokens = spikes.shape[0]
        key = (tokens, dtype)
        if key not in self.buffers:
            self.buffers[key] = np.zeros((self.phases, self.channels,
                                          self.width(tokens) + self.tail), dtype=dtype)
        buf = self.buffers[key]
        x = spikes.reshape((tokens, self.channels) + self.size)
        active = None
        if pick:
            carrying = spikes.reshape(tokens, self.channels, -1).any(axis=2).any(axis=0)
            if not carrying.all():
                active = np.flatnonzero(carrying)
                x = x[:, active]
        x = x.swapaxes(0, 1)
        grid = buf[:, :x.shape[0], :self.width(tokens)].reshape(
            (self.phases, x.shape[0], tokens) + self.phase_shape)
        for phase in np.ndindex(*self.geometry.strides):
            src, dst = [slice(None), slice(None)], [slice(None), slice(None)]
            for r, s, lo, n in zip(phase, self.geometry.strides, self.pads_lo, self.size):
                first = (r - lo) % s
                count = len(range(first, n, s))
                src.append(slice(first, n, s))
                dst.append(slice((first + lo) // s, (first + lo) // s + count))
            grid[np.ravel_multi_index(phase, self.geometry.strides)][tuple(dst)] = x[tuple(src)]
        return buf, active

    def store(self, y: np.ndarray, tokens: int, dest: np.ndarray,
              channels: np.ndarray | None) -> None:
        """Products [rows, width] into ``dest`` [tokens, O, *out] (int64), dropping the margins;
        ``channels``: the output channels the rows are (None: all, in order)."""
        grid = y.reshape((y.shape[0], tokens) + self.phase_shape)
        valid = grid[(slice(None), slice(None)) + tuple(slice(0, o) for o in self.out)]
        if channels is None:
            dest[...] = valid.swapaxes(0, 1)
        else:
            dest[:, channels] = valid.swapaxes(0, 1)
