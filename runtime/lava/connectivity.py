"""Synaptic connectivity of spike layers as CSR matrices over flattened neurons.

A synapse matrix has one row per accumulator neuron and one column per input (encoder) neuron of
one token (linear) or one sample (conv). Entries are the int8 weights and every structural synapse
is kept, zero-valued ones too: a zero weight still occupies synaptic memory, and the fan-out of an
input neuron is the number of synapses it drives (what op counts charge per spike).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Csr:
    rows: int
    cols: int
    indptr: np.ndarray   # int64 [rows + 1]
    indices: np.ndarray  # int64 [nnz]
    data: np.ndarray     # int8 [nnz]

    @classmethod
    def from_entries(cls, rows: int, cols: int, r: np.ndarray, c: np.ndarray,
                     v: np.ndarray) -> "Csr":
        order = np.lexsort((c, r))
        r, c, v = r[order], c[order], v[order]
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=rows), out=indptr[1:])
        return cls(rows, cols, indptr, c.astype(np.int64), v.astype(np.int8))

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
        """Row r becomes rows r*parts + p, p over ``parts`` contiguous slices of the columns, so
        that each new row sums a share of the inputs (partial sums stay within a narrow
        accumulator; their total is the original row)."""
        if parts == 1:
            return self
        width = -(-self.cols // parts)
        r = self.row_ids() * parts + self.indices // width
        return Csr.from_entries(self.rows * parts, self.cols, r, self.indices, self.data)


def linear_connectivity(weight: np.ndarray, group_size: int | None) -> Csr:
    """weight int8 [N, K] in groups of ``group_size`` inputs: accumulator row g*N + n sums
    weight[n, i] * counts[i] over the inputs i of group g (acc layout [..., G, N])."""
    n, k = weight.shape
    group = group_size or k
    g = k // group
    gi, ni, ii = np.meshgrid(np.arange(g), np.arange(n), np.arange(group), indexing="ij")
    cols = gi * group + ii
    rows = gi * n + ni
    return Csr.from_entries(g * n, k, rows.ravel(), cols.ravel(), weight[ni, cols].ravel())


def conv_connectivity(weight: np.ndarray, in_shape: tuple[int, ...], strides, pads, dilations,
                      group: int) -> tuple[Csr, tuple[int, ...]]:
    """The unrolled N-d convolution of one sample [C, *spatial] with weight [O, C/group, *k]
    (pads [begin..., end...]): rows are output neurons [O, *out], columns input neurons.
    Returns the matrix and the output shape [O, *out]."""
    o_ch, c_per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    spatial = tuple(in_shape[1:])
    nd = len(spatial)
    strides = np.asarray(strides or [1] * nd)
    dilations = np.asarray(dilations or [1] * nd)
    pads = list(pads or [0] * (2 * nd))
    begin = np.asarray(pads[:nd])
    out = tuple(int((spatial[i] + pads[i] + pads[i + nd] - dilations[i] * (kernel[i] - 1) - 1)
                    // strides[i] + 1) for i in range(nd))
    positions = np.indices(out).reshape(nd, -1)  # [nd, P]
    n_pos, n_in = positions.shape[1], int(np.prod(spatial))
    o_per_group = o_ch // group
    o_idx = np.arange(o_ch)
    c_abs = (o_idx // o_per_group)[:, None] * c_per_group + np.arange(c_per_group)[None, :]
    rows, cols, vals = [], [], []
    for tap in np.ndindex(*kernel):
        where = positions * strides[:, None] - begin[:, None] + (np.asarray(tap)
                                                                 * dilations)[:, None]
        valid = np.all((where >= 0) & (where < np.asarray(spatial)[:, None]), axis=0)
        pos_ids = np.nonzero(valid)[0]
        in_flat = np.ravel_multi_index(tuple(where[:, valid]), spatial)
        # broadcast over [O, C/group, valid positions]
        r = o_idx[:, None, None] * n_pos + pos_ids[None, None, :]
        c = c_abs[:, :, None] * n_in + in_flat[None, None, :]
        v = weight[(slice(None), slice(None)) + tap][:, :, None]
        shape = (o_ch, c_per_group, pos_ids.size)
        rows.append(np.broadcast_to(r, shape).ravel())
        cols.append(np.broadcast_to(c, shape).ravel())
        vals.append(np.broadcast_to(v, shape).ravel())
    csr = Csr.from_entries(o_ch * n_pos, int(in_shape[0]) * n_in, np.concatenate(rows),
                           np.concatenate(cols), np.concatenate(vals))
    return csr, (o_ch,) + out
