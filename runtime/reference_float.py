"""Reference kernels of the float, shape and attention ops (docs/OPS.md).

Each kernel is ``kernel(attrs, *inputs)``; attrs already carry the op defaults.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv_nd(x, w, b, strides, pads, dilations, group):
    """N-d cross-correlation, NC* layout, via windows + tensordot. Exact for integer dtypes."""
    n_sp = x.ndim - 2
    strides = list(strides or [1] * n_sp)
    dilations = list(dilations or [1] * n_sp)
    pads = list(pads or [0] * (2 * n_sp))
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + n_sp]) for i in range(n_sp)])
    kernel = w.shape[2:]
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(x, span, axis=tuple(range(2, 2 + n_sp)))
    # win: [N, C, *out_full, *span]; take strides on out axes and dilations on span axes
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
        slice(None, None, d) for d in dilations)
    win = win[sl]
    c_per_group = w.shape[1]
    o_per_group = w.shape[0] // group
    outs = []
    for g in range(group):
        xg = win[:, g * c_per_group:(g + 1) * c_per_group]
        wg = w[g * o_per_group:(g + 1) * o_per_group]
        # contract C and kernel axes: xg [N, C, *out, *k], wg [O, C, *k]
        axes_x = [1] + list(range(2 + n_sp, 2 + 2 * n_sp))
        axes_w = [1] + list(range(2, 2 + n_sp))
        y = np.tensordot(xg, wg, axes=(axes_x, axes_w))  # [N, *out, O]
        outs.append(np.moveaxis(y, -1, 1))
    y = np.concatenate(outs, axis=1) if group > 1 else outs[0]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * n_sp)
    return y


def _conv(a, x, w, b=None):
    return conv_nd(x, w, b, a["strides"], a["pads"], a["dilations"], a["group"]).astype(x.dtype)


def _linear(a, x, w, b=None):
    y = x @ w.T
    return (y + b if b is not None else y).astype(x.dtype)


FLOAT_KERNELS = {
    "linear": _linear,
    "matmul": lambda a, x, y: np.matmul(x, y),
    "conv": _conv,
    "relu": lambda a, x: np.maximum(x, 0).astype(x.dtype),
    "add": lambda a, x, y: x + y,
}
