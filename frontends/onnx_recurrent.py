"""LSTM, GRU and RNN unrolled over a static sequence length into IR ops.

Each direction becomes one ``linear`` over the whole sequence for the input projection (the
input and recurrent biases folded into it) and, per time step, one ``linear`` for the recurrent
projection of the previous hidden state, plus the float gate arithmetic (split, activations,
products and sums). The spike passes then spike both projections like any other linear layer,
the gates stay float, and every target runs the result with its ordinary linear-layer machinery.
The first step of a layer without an initial state skips the recurrent projection (it reads a
zero state). Sequences shorter than T (sequence_lens) keep their state past their end and
write zeros to Y there. W, R, B and P may be runtime tensors (then the projections are plain
float linears with runtime weights, which the spike passes leave alone). Outputs follow ONNX: Y [T, D, B, H] (layout 1: [B, T, D, H]), Y_h and Y_c
[D, B, H] (layout 1: [B, D, H]).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from sbcompile.frontends.onnx_lowering import NodeView
from sbcompile.frontends.onnx_registry import _converter
from sbcompile.ir.ops import OPS

_ATTRS = ("activation_alpha", "activation_beta", "activations", "clip", "direction",
          "hidden_size", "layout")


class _Cell:
    """What one direction of a recurrent node emits into: shapes, dtype and small helpers."""

    def __init__(self, n: NodeView, batch, hidden: int, dtype: str):
        self.n, self.batch, self.hidden, self.dtype = n, batch, hidden, dtype

    def temp(self, width: int | None = None) -> str:
        return self.n.temp((self.batch, width or self.hidden), self.dtype)

    def op(self, op: str, *inputs: str, width: int | None = None, **attrs) -> str:
        return self.n.emit(op, list(inputs), self.temp(width), **attrs)

    def const(self, v) -> str:
        return self.n.param(np.array(v, dtype=self.dtype), "c")

    def project(self, h: str, weight: str) -> str:
        """h @ weight.T: the recurrent projection, a linear layer of its own (every step reads
        the same weight parameter)."""
        return self.op("linear", h, weight, width=self.n.type(weight).shape[0])

    def gates(self, value: str, count: int) -> list[str]:
        outs = [self.temp() for _ in range(count)]
        self.n.emit("split", [value], outs, axis=1, num_outputs=count)
        return outs


# ---- activations (the names ONNX recurrent ops accept, without alpha/beta) ----------------------
def _activation(n: NodeView, name: str) -> Callable[[_Cell, str], str]:
    direct = next((s.name for s in OPS.values()
                   if s.onnx == name and s.inputs == ("x",) and not s.attrs), None)
    if direct:
        return lambda c, x: c.op(direct, x)
    if name == "Softsign":
        return lambda c, x: c.op("div", x, c.op("add", c.op("abs", x), c.const(1.0)))
    if name == "HardSigmoid":
        return lambda c, x: c.op("clip", c.op("add", c.op("mul", x, c.const(0.2)),
                                                c.const(0.5)), c.const(0.0), c.const(1.0))
    if name == "LeakyRelu":
        return lambda c, x: c.op("leaky_relu", x, alpha=0.01)
    raise n.refuse(f"activation '{name}' is not supported")


def _activations(n: NodeView, defaults: list[str], directions: int) -> list[list[Callable]]:
    if n.attr("activation_alpha") is not None or n.attr("activation_beta") is not None:
        raise n.refuse("activation_alpha/activation_beta are not supported")
    names = [a.decode() if isinstance(a, bytes) else a for a in n.attr("activations", [])]
    names = names or defaults * directions
    if len(names) != len(defaults) * directions:
        raise n.refuse(f"expected {len(defaults) * directions} activations, got {len(names)}")
    k = len(defaults)
    return [[_activation(n, name) for name in names[d * k:(d + 1) * k]]
            for d in range(directions)]


# ---- the shared unrolling -----------------------------------------------------------------------
class _Layer:
    """Inputs, sizes and per-direction weights of one recurrent node."""

    def __init__(self, n: NodeView, gates: int):
        self.n = n
        if n.attr("layout", 0) not in (0, 1):
            raise n.refuse(f"layout={n.attr('layout')} is not supported")
        self.layout = int(n.attr("layout", 0))
        direction = n.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise n.refuse(f"direction '{direction}' is not supported")
        self.reverse = [direction == "reverse"] if direction != "bidirectional" else [False, True]
        x = n.type(n.inputs[0])
        self.dtype = x.dtype
        if self.dtype not in ("float32", "float64", "float16"):
            raise n.refuse(f"input of dtype {self.dtype} is not supported")
        steps, self.batch = (x.shape[0], x.shape[1]) if self.layout == 0 else (x.shape[1],
                                                                                 x.shape[0])
        if not isinstance(steps, int):
            raise n.refuse_dynamic(f"the sequence length must be static to unroll, got "
                                   f"'{steps}'", steps)
        self.steps = steps
        self.hidden = int(n.attr("hidden_size", n.type(n.inputs[2]).shape[-1]))
        self.gates = gates
        self.lengths, self._inside = self._lengths(), {}
        self.clip = n.attr("clip")
        self.x = self._time_major(n.inputs[0], x.shape)

    def _lengths(self) -> str | None:
        """sequence_lens as an int64 [B, 1] value when some sequence may be shorter than T."""
        n = self.n
        if not n.input(4):
            return None
        lengths = n.const(4)
        if lengths is not None and np.all(lengths == self.steps):
            return None
        as_int = n.emit("cast", [n.inputs[4]], n.temp((self.batch,), "int64"), to="int64")
        return n.emit("unsqueeze", [as_int, n.param(np.array([1], np.int64), "axis")],
                      n.temp((self.batch, 1), "int64"))

    def masked(self, c: "_Cell", t: int, new: str, old: str | None) -> str:
        """Past a sequence's end (t >= its length) the state keeps its old value (zeros before
        the first step), so final states are those at each sequence's last step and a reverse
        pass starts at it."""
        if self.lengths is None:
            return new
        if t not in self._inside:
            self._inside[t] = self.n.emit("less", [self.n.param(np.array([t], np.int64), "t"),
                                                   self.lengths],
                                          self.n.temp((self.batch, 1), "bool"))
        return c.op("where", self._inside[t], new, old or c.const(0.0))

    def visible(self, c: "_Cell", t: int, h: str) -> str:
        """The Y entry of step t: zero past the sequence's end."""
        if self.lengths is None:
            return h
        return c.op("where", self._inside[t], h, c.const(0.0))

    def _time_major(self, x: str, shape: tuple) -> str:
        if self.layout == 0:
            return x
        return self.n.emit("transpose", [x], self.n.temp((shape[1], shape[0], shape[2]),
                                                         self.dtype), perm=[1, 0, 2])

    def initial(self, i: int, direction: int) -> str | None:
        """The initial state of one direction [B, H], or None (zeros, also when given as a
        constant of zeros, as the TorchScript exporter writes it)."""
        name = self.n.input(i)
        const = self.n.const(i) if name else None
        if not name or (const is not None and not np.any(const)):
            return None
        return self.pick(name, 0 if self.layout == 0 else 1, direction)

    def pick(self, value: str, axis: int, index: int) -> str:
        """``value`` at ``index`` along ``axis``, that axis removed (a slice and a squeeze: index
        parameters stay 1-D, as every target keeps them)."""
        n = self.n
        shape = n.type(value).shape
        bounds = [n.param(np.array([v], np.int64), "at") for v in (index, index + 1, axis)]
        one = n.emit("slice", [value, *bounds], n.temp(shape[:axis] + (1,) + shape[axis + 1:],
                                                      self.dtype))
        return n.emit("squeeze", [one, n.param(np.array([axis], np.int64), "axis")],
                      n.temp(shape[:axis] + shape[axis + 1:], self.dtype))

    def piece(self, i: int, direction: int, start: int = 0, stop: int | None = None) -> str:
        """Rows [start, stop) of one direction of input i (W, R, B or P): a parameter when the
        input is constant, else a gather and a slice of the runtime tensor."""
        n = self.n
        arr = n.const(i)
        if arr is not None:
            return n.param(np.ascontiguousarray(arr[direction][start:stop]), "w")
        shape = n.type(n.inputs[i]).shape
        stop = shape[-2 if len(shape) == 3 else -1] if stop is None else stop
        if not isinstance(stop, int):
            raise n.refuse(f"input {i} needs a static shape")
        rows = self.pick(n.inputs[i], 0, direction)
        if start == 0 and stop == shape[1]:
            return rows
        bounds = [n.param(np.array([v], np.int64), "bound") for v in (start, stop, 0)]
        return n.emit("slice", [rows, *bounds], n.temp((stop - start,) + tuple(shape[2:]),
                                                      self.dtype))

    def bias(self, direction: int, recurrent_rows: int | None = None) -> str | None:
        """Wb + Rb (rows [0, recurrent_rows) of Rb only, when given), or None without B."""
        n = self.n
        if not n.input(3):
            return None
        width = self.gates * self.hidden
        b = n.const(3)
        if b is not None:
            rb = b[direction][width:].copy()
            if recurrent_rows is not None:
                rb[recurrent_rows:] = 0
            return n.param(b[direction][:width] + rb, "bias")
        wb = self.piece(3, direction, 0, width)
        rb = self.piece(3, direction, width, width + (recurrent_rows or width))
        if recurrent_rows is not None:
            rb = n.emit("concat", [rb, n.param(np.zeros(width - recurrent_rows, self.dtype),
                                               "zeros")], n.temp((width,), self.dtype), axis=0)
        return n.emit("add", [wb, rb], n.temp((width,), self.dtype))

    def input_projection(self, direction: int, bias: str | None) -> str:
        """X @ W.T + bias over the whole sequence: [T, B, G*H]."""
        w = self.piece(1, direction)
        return self.n.emit("linear", [self.x, w, bias or ""],
                           self.n.temp((self.steps, self.batch, self.gates * self.hidden),
                                       self.dtype))

    def step_input(self, projected: str, t: int) -> str:
        return self.pick(projected, 0, t)

    def clipped(self, c: _Cell, value: str, width: int) -> str:
        if self.clip is None:
            return value
        bound = float(self.clip)
        return c.op("clip", value, c.const(-bound), c.const(bound), width=width)

    def order(self, direction: int) -> range:
        return range(self.steps - 1, -1, -1) if self.reverse[direction] else range(self.steps)

    def outputs(self, hidden_seqs: list[list[str]], finals: list[list[str]]) -> None:
        """Y from the per-step hidden states (in time order), then the final states."""
        n = self.n
        d, b, h, t = len(hidden_seqs), self.batch, self.hidden, self.steps
        if n.used(0):
            per_dir = []
            for seq in hidden_seqs:
                steps = [n.emit("unsqueeze", [s, n.param(np.array([0], np.int64), "axis")],
                                n.temp((1, b, h), self.dtype)) for s in seq]
                joined = n.emit("concat", steps, n.temp((t, b, h), self.dtype), axis=0)
                per_dir.append(n.emit("unsqueeze", [joined, n.param(np.array([1], np.int64),
                                                                   "axis")],
                                      n.temp((t, 1, b, h), self.dtype)))
            y = per_dir[0] if d == 1 else n.emit("concat", per_dir, n.temp((t, d, b, h),
                                                                         self.dtype), axis=1)
            self._emit_as(y, n.outputs[0], (t, d, b, h), [2, 0, 1, 3])
        for i, states in enumerate(finals, start=1):
            if not n.used(i):
                continue
            stacked = [n.emit("unsqueeze", [s, n.param(np.array([0], np.int64), "axis")],
                              n.temp((1, b, h), self.dtype)) for s in states]
            y = stacked[0] if d == 1 else n.emit("concat", stacked, n.temp((d, b, h),
                                                                        self.dtype), axis=0)
            self._emit_as(y, n.outputs[i], (d, b, h), [1, 0, 2])

    def _emit_as(self, value: str, out: str, shape: tuple, batch_first_perm: list[int]) -> None:
        if self.layout == 1:
            self.n.emit("transpose", [value], out, perm=batch_first_perm)
        else:
            self.n.emit("identity", [value], out)


# ---- LSTM ---------------------------------------------------------------------------------------
@_converter("LSTM", attrs=_ATTRS + ("input_forget",))
def _lstm(n: NodeView) -> None:
    """Gates i, o, f, c (ONNX order); peepholes P = [p_i, p_o, p_f] when given."""
    if n.attr("input_forget", 0):
        raise n.refuse("input_forget=1 is not supported")
    layer = _Layer(n, 4)
    acts = _activations(n, ["Sigmoid", "Tanh", "Tanh"], len(layer.reverse))
    peep = bool(n.input(7))
    h_dim = layer.hidden
    seqs, final_h, final_c = [], [], []
    for d in range(len(layer.reverse)):
        f, g, hfn = acts[d]
        c = _Cell(n, layer.batch, h_dim, layer.dtype)
        projected = layer.input_projection(d, layer.bias(d))
        h, cell = layer.initial(5, d), layer.initial(6, d)
        r = layer.piece(2, d)
        if peep:
            p_i, p_o, p_f = (layer.piece(7, d, k * h_dim, (k + 1) * h_dim) for k in range(3))
        hs = {}
        for t in layer.order(d):
            pre = layer.step_input(projected, t)
            if h is not None:
                pre = c.op("add", pre, c.project(h, r), width=4 * h_dim)
            pre = layer.clipped(c, pre, 4 * h_dim)
            i_pre, o_pre, f_pre, c_pre = c.gates(pre, 4)
            if peep and cell is not None:
                i_pre = c.op("add", i_pre, c.op("mul", cell, p_i))
                f_pre = c.op("add", f_pre, c.op("mul", cell, p_f))
            i_gate, f_gate, cand = f(c, i_pre), f(c, f_pre), g(c, c_pre)
            new = c.op("mul", i_gate, cand)
            new_cell = new if cell is None else c.op("add", c.op("mul", f_gate, cell), new)
            if peep:
                o_pre = c.op("add", o_pre, c.op("mul", new_cell, p_o))
            new_h = c.op("mul", f(c, o_pre), hfn(c, new_cell))
            h, cell = layer.masked(c, t, new_h, h), layer.masked(c, t, new_cell, cell)
            hs[t] = layer.visible(c, t, h)
        seqs.append([hs[t] for t in range(layer.steps)])
        final_h.append(h)
        final_c.append(cell)
    layer.outputs(seqs, [final_h, final_c])


# ---- GRU ----------------------------------------------------------------------------------------
@_converter("GRU", attrs=_ATTRS + ("linear_before_reset",))
def _gru(n: NodeView) -> None:
    """Gates z, r, h (ONNX order). linear_before_reset=0 projects r * H with R_h (a second
    recurrent linear per step); =1 applies r to (H R_h^T + Rb_h)."""
    layer = _Layer(n, 3)
    acts = _activations(n, ["Sigmoid", "Tanh"], len(layer.reverse))
    before_reset = int(n.attr("linear_before_reset", 0))
    h_dim = layer.hidden
    seqs, finals = [], []
    for d in range(len(layer.reverse)):
        f, g = acts[d]
        c = _Cell(n, layer.batch, h_dim, layer.dtype)
        # Rb_h stays inside the reset product when linear_before_reset=1
        projected = layer.input_projection(d, layer.bias(d, 2 * h_dim if before_reset else None))
        r_zr, r_h = layer.piece(2, d, 0, 2 * h_dim), layer.piece(2, d, 2 * h_dim, 3 * h_dim)
        rb_h = (layer.piece(3, d, 5 * h_dim, 6 * h_dim) if before_reset and n.input(3)
                else None)
        h = layer.initial(5, d)
        hs = {}
        for t in layer.order(d):
            x_t = layer.step_input(projected, t)
            x_z, x_r, x_h = c.gates(x_t, 3)
            if h is None:  # zero state: no recurrent terms (but Rb_h under the reset gate)
                z_pre, r_pre, h_rec = x_z, x_r, rb_h
            else:
                rec = c.project(h, r_zr)
                rec_z, rec_r = c.gates(rec, 2)
                z_pre, r_pre = c.op("add", x_z, rec_z), c.op("add", x_r, rec_r)
            z_gate = f(c, layer.clipped(c, z_pre, h_dim))
            r_gate = f(c, layer.clipped(c, r_pre, h_dim))
            if h is None:
                h_pre = x_h if h_rec is None else c.op("add", x_h, c.op("mul", r_gate, h_rec))
            elif before_reset:
                h_rec = c.project(h, r_h)
                if rb_h is not None:
                    h_rec = c.op("add", h_rec, rb_h)
                h_pre = c.op("add", x_h, c.op("mul", r_gate, h_rec))
            else:
                h_pre = c.op("add", x_h, c.project(c.op("mul", r_gate, h), r_h))
            cand = g(c, layer.clipped(c, h_pre, h_dim))
            keep = c.op("sub", c.const(1.0), z_gate)
            new_h = c.op("mul", keep, cand) if h is None else c.op(
                "add", c.op("mul", keep, cand), c.op("mul", z_gate, h))
            h = layer.masked(c, t, new_h, h)
            hs[t] = layer.visible(c, t, h)
        seqs.append([hs[t] for t in range(layer.steps)])
        finals.append(h)
    layer.outputs(seqs, [finals])


# ---- RNN ----------------------------------------------------------------------------------------
@_converter("RNN", attrs=_ATTRS)
def _rnn(n: NodeView) -> None:
    """H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)."""
    layer = _Layer(n, 1)
    acts = _activations(n, ["Tanh"], len(layer.reverse))
    h_dim = layer.hidden
    seqs, finals = [], []
    for d in range(len(layer.reverse)):
        (f,) = acts[d]
        c = _Cell(n, layer.batch, h_dim, layer.dtype)
        projected = layer.input_projection(d, layer.bias(d))
        h = layer.initial(5, d)
        r = layer.piece(2, d)
        hs = {}
        for t in layer.order(d):
            pre = layer.step_input(projected, t)
            if h is not None:
                pre = c.op("add", pre, c.project(h, r))
            h = layer.masked(c, t, f(c, layer.clipped(c, pre, h_dim)), h)
            hs[t] = layer.visible(c, t, h)
        seqs.append([hs[t] for t in range(layer.steps)])
        finals.append(h)
    layer.outputs(seqs, [finals])
