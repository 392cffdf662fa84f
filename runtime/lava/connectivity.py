"""Synaptic connectivity of spike layers as CSR matrices over flattened neurons.

A synapse matrix has one row per accumulator neuron and one column per input (encoder) neuron of
one token (linear) or one sample (conv). Entries are the int8 weights and every structural synapse
is kept, zero-valued ones too: a zero weight still occupies synaptic memory, and the fan-out of an
input neuron is the number of synapses it drives (what op counts charge per spike).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbcompile.ir.shapes import window_out


@dataclass
class Csr:
    rows: int
    cols: int
    indptr: np.ndarray   # int64 [rows + 1]
    indices: np.ndarray  # int64 [nnz]
    data: np.ndarray     # int8 [nnz]

    def row_ids(self) -> np.ndarray:
        return np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.indptr))

    def fan_out(self) -> np.ndarray:
        """Synapses per input neuron (int64 [cols])."""
        return np.bincount(self.indices, minlength=self.cols).astype(np.int64)

    def fan_in(self) -> np.ndarray:
        """Synapses per accumulator neuron (int64 [rows])."""
        return np.diff(self.indptr)

    def is_full(self) -> bool:
        return self.indices.size == self.rows * self.cols

    def to_dense(self) -> np.ndarray:
        out = np.zeros((self.rows, self.cols), dtype=np.int8)
        out[self.row_ids(), self.indices] = self.data
        return out

    def split_fan_in(self, parts: int) -> "Csr":
        """Row r becomes rows r*parts + p: partial p sums the p-th contiguous share of the row's
        own inputs (columns are sorted within each row), so each partial sum stays within a
        narrow accumulator and their total is the original row."""
        if parts == 1:
            return self
        rows = self.row_ids()
        position = np.arange(self.indices.size, dtype=np.int64) - self.indptr[rows]
        width = np.maximum(-(-self.fan_in() // parts), 1)[rows]
        new_rows = rows * parts + position // width
        indptr = np.zeros(self.rows * parts + 1, dtype=np.int64)
        np.cumsum(np.bincount(new_rows, minlength=self.rows * parts), out=indptr[1:])
        return Csr(self.rows * parts, self.cols, indptr, self.indices, self.data)


def linear_connectivity(weight: np.ndarray, group_size: int | None) -> Csr:
    """weight int8 [N, K] in groups of ``group_size`` inputs: accumulator row g*N + n sums
    weight[n, i] * counts[i] over the inputs i of group g (acc layout [..., G, N])."""
    n, k = weight.shape
    group = group_size or k
    g = k // group
    data = weight.reshape(n, g, group).transpose(1, 0, 2).ravel()
    indices = np.broadcast_to(np.arange(k, dtype=np.int64).reshape(g, 1, group),
                              (g, n, group)).ravel()
    indptr = np.arange(g * n + 1, dtype=np.int64) * group
    return Csr(g * n, k, indptr, indices, data.astype(np.int8))


def conv_connectivity(weight: np.ndarray, in_shape: tuple[int, ...], strides, pads, dilations,
                      group: int) -> tuple[Csr, tuple[int, ...]]:
    """The unrolled N-d convolution of one sample [C, *spatial] with weight [O, C/group, *k]
    (pads [begin..., end...]): rows are output neurons [O, *out], columns input neurons, sorted
    within each row. Returns the matrix and the output shape [O, *out]."""
    o_ch, c_per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    spatial = tuple(in_shape[1:])
    nd = len(spatial)
    strides = np.asarray(strides or [1] * nd)
    dilations = np.asarray(dilations or [1] * nd)
    pads = list(pads or [0] * (2 * nd))
    out = tuple(window_out(spatial[i], int(kernel[i]), int(strides[i]), pads[i], pads[i + nd],
                           int(dilations[i])) for i in range(nd))
    positions = np.indices(out).reshape(nd, -1)  # [nd, P]
    taps = np.array(list(np.ndindex(*kernel))).T  # [nd, n_taps], row-major tap order
    # input coordinates of every (position, tap): [nd, P, n_taps]
    where = (positions * strides[:, None] - np.asarray(pads[:nd])[:, None])[:, :, None] \
        + (taps * dilations[:, None])[:, None, :]
    valid = np.all((where >= 0) & (where < np.asarray(spatial)[:, None, None]), axis=0)
    in_flat = np.ravel_multi_index(tuple(np.where(valid, where, 0)), spatial)  # [P, n_taps]
    n_pos, n_in = positions.shape[1], int(np.prod(spatial))
    c_abs = ((np.arange(o_ch) // (o_ch // group))[:, None] * c_per_group
             + np.arange(c_per_group)[None, :])  # [O, C/group]
    # entries in row order (o, position) and, within a row, column order (channel, tap)
    shape = (o_ch, n_pos, c_per_group, taps.shape[1])
    mask = np.broadcast_to(valid[None, :, None, :], shape)
    cols = c_abs[:, None, :, None] * n_in + in_flat[None, :, None, :]
    vals = np.broadcast_to(weight.reshape(o_ch, 1, c_per_group, -1), shape)
    per_row = np.tile(valid.sum(axis=1) * c_per_group, o_ch)
    indptr = np.zeros(o_ch * n_pos + 1, dtype=np.int64)
    np.cumsum(per_row, out=indptr[1:])
    csr = Csr(o_ch * n_pos, int(in_shape[0]) * n_in, indptr, cols[mask].astype(np.int64),
              vals[mask].astype(np.int8))
    return csr, (o_ch,) + out


def layer_connectivity(op: str, weight: np.ndarray, attrs: dict,
                       in_shape: tuple[int, ...]) -> tuple[Csr, tuple[int, ...]]:
    """The synapse matrix of a spike_linear or spike_conv node (``attrs`` with the op's
    defaults, ``in_shape`` the per-sample input of a conv) and the acc shape of one token."""
    if op == "spike_linear":
        csr = linear_connectivity(weight, attrs["group_size"])
        return csr, (csr.rows // weight.shape[0], weight.shape[0])
    return conv_connectivity(weight, in_shape, attrs["strides"], attrs["pads"],
                             attrs["dilations"], attrs["group"])
