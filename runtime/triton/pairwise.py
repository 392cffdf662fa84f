"""numpy's float32 summation order, as a table the encoder kernel follows.

``np.sum``/``np.mean`` of a contiguous float32 row is not a left-to-right sum: numpy walks the
row in buffers of 8192 elements, adds each buffer's pairwise sum to a running total (starting at
0), and the pairwise sum splits ``n > 128`` elements at ``n2 = n // 2 - (n // 2) % 8``, sums a leaf
of ``8 <= n <= 128`` elements in 8 interleaved lanes combined as ``((l0+l1)+(l2+l3))+((l4+l5)+
(l6+l7))`` and then adds the ``n % 8`` tail in order, and sums a leaf of ``n < 8`` in order from 0.

The kernel reproduces this bit for bit: every leaf of a buffer's tree is placed at depth ``D``
of a perfect binary tree (a leaf at depth ``d < D`` takes the leftmost slot of its subtree, the
other slots hold 0, and ``v + 0 == v`` exactly), so the kernel sums leaves in parallel and then
combines slots pairwise, level by level.
"""
from __future__ import annotations

import numpy as np

BUFFER = 8192  # numpy's default ufunc buffer size
LEAF = 128  # numpy's PW_BLOCKSIZE


def _leaves(start: int, n: int, depth: int, path: int, out: list) -> None:
    if n <= LEAF:
        out.append((start, n, depth, path))
        return
    n2 = n // 2
    n2 -= n2 % 8
    _leaves(start, n2, depth + 1, 2 * path, out)
    _leaves(start + n2, n - n2, depth + 1, 2 * path + 1, out)


def slot_tables(row_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Leaf tables for a row of ``row_len`` elements: ``starts`` and ``lengths``, int32
    ``[n_buffers, 2**depth]`` (length 0 marks an empty slot), and the tree depth."""
    if row_len < 1:
        raise ValueError("row length must be positive")
    buffers = []
    for b0 in range(0, row_len, BUFFER):
        leaves: list = []
        _leaves(b0, min(BUFFER, row_len - b0), 0, 0, leaves)
        buffers.append(leaves)
    depth = max(d for leaves in buffers for _, _, d, _ in leaves)
    starts = np.zeros((len(buffers), 1 << depth), np.int32)
    lengths = np.zeros_like(starts)
    for b, leaves in enumerate(buffers):
        for start, n, d, path in leaves:
            slot = path << (depth - d)
            starts[b, slot], lengths[b, slot] = start, n
    return starts, lengths, depth


def emulate_sum(row: np.ndarray) -> np.float32:
    """The table's summation order in numpy scalars (documents and tests the tables)."""
    starts, lengths, depth = slot_tables(row.size)
    total = np.float32(0)
    for b in range(starts.shape[0]):
        slots = []
        for s, n in zip(starts[b], lengths[b]):
            lanes = np.zeros(8, np.float32)
            for i in range(n // 8):
                lanes = lanes + row[s + 8 * i: s + 8 * i + 8]
            while lanes.size > 1:
                lanes = lanes[0::2] + lanes[1::2]
            leaf = lanes[0]
            for t in range(n - n % 8, n):
                leaf = np.float32(leaf + row[s + t])
            slots.append(leaf)
        level = np.array(slots, np.float32)
        while level.size > 1:
            level = level[0::2] + level[1::2]
        total = np.float32(total + level[0])
    return total
