"""Executes a Triton program: spiked layers through the kernels, float ops through PyTorch, the
rest through the numpy reference kernels. Values stay on the device between nodes."""
from __future__ import annotations

import math

import numpy as np
import torch

from sbcompile.errors import SbcError
from sbcompile.runtime import reference
from sbcompile.ir.ops import (INTEGER_OPS, count_limit, node_attrs, saturation, threshold_axes,
                              threshold_shape)
from sbcompile.runtime.triton import launch
from sbcompile.runtime.triton.loader import kernels
from sbcompile.runtime.triton.program import TritonProgram
from sbcompile.runtime.triton.torch_ops import torch_kernel

INT32_MAX = np.iinfo(np.int32).max


def device_for(interpret: bool) -> torch.device:
    if interpret:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SbcError("the triton target needs a CUDA GPU and none is available; run with the "
                       "interpreter (interpret=True, CLI --interpret) to use the CPU")
    return torch.device("cuda")


class _Run:
    def __init__(self, program: TritonProgram, device: torch.device, interpret: bool,
                 keep_integers: bool):
        self.p, self.g, self.dev = program, program.graph, device
        self.kern = kernels(interpret)
        self.keep_integers = keep_integers
        self.env: dict[str, torch.Tensor] = {}
        self.encoded: dict[str, launch.Encoded] = {}  # counts value -> encoder outputs
        self.done: set[str] = set()  # decode nodes fused into their layer
        self.readers = {}  # counts value -> the fast layers reading it
        self.peaks: list[tuple] = []  # (node, peak |count| on the device) per kernel layer
        self.encoder_peaks: list[tuple] = []  # (node, its Encoded): peaks read after the
        # layers ran, since the dense-count GEMV writes the counts of its own encoder
        for step in program.linears.values():
            counts = self.g.node(step.node).inputs[0]
            self.readers.setdefault(counts, []).append(step)
        self.consumers = self.g.consumers()
        self.score_peaks: list[tuple] = []  # (spike_scores node, peak |query count|)

    def value(self, name: str) -> torch.Tensor:
        if name in self.env:
            return self.env[name]
        key = (str(self.dev), name)
        if key not in self.p.device_cache:
            src = self.g.params[name] if name in self.g.params else self.p.tensors[name]
            self.p.device_cache[key] = torch.from_numpy(np.asarray(src, order="C")).to(self.dev)
        return self.p.device_cache[key]

    def encode(self, node, step) -> None:
        a = node_attrs(node)
        x = self.value(node.inputs[0]).to(torch.float32).contiguous()
        shape = tuple(x.shape)
        dynamic = a["policy"] == "dynamic"
        row_len = math.prod(shape[i] for i in threshold_axes(len(shape), a["granularity"])) \
            if dynamic else shape[-1]
        rows = x.numel() // step.channels
        fast = self.readers.get(node.outputs[0], [])
        only_fast = len(fast) == len(self.consumers.get(node.outputs[0], []))
        if rows <= step.event_max_rows:
            path = "event"
        elif rows <= launch.DENSE_MAX_ROWS and row_len == step.channels and fast and \
                only_fast and all(s.dense and s.weights <= launch.FUSED_MAX_WEIGHTS
                                  for s in fast):
            path = "dense"  # small layers, counts too dense to skip: quantised in the GEMV
        elif fast and all(s.gemm for s in fast):
            path = "gemm"
        else:
            path = "event" if rows <= launch.EVENT_MAX_ROWS else "none"
        threshold = None if dynamic else self.value(node.inputs[1]).reshape(1).float()
        enc = launch.encode(self.kern, x.view(-1, row_len), step.channels, dynamic=dynamic,
                            k=a["k"], vth_min=a["vth_min"], vth_max=a["vth_max"],
                            limit=count_limit(a), threshold=threshold,
                            path=path, unit=step.unit)
        self.encoded[node.outputs[0]] = enc
        self.encoder_peaks.append((node, enc))
        self.env[node.outputs[0]] = enc.counts.view(shape)
        if dynamic:
            self.env[node.outputs[1]] = enc.vth.view(threshold_shape(shape, a["granularity"]))
        else:
            self.env[node.outputs[1]] = self.value(node.inputs[1]).float()

    def linear(self, node, step, enc: launch.Encoded) -> None:
        counts_shape = self.env[node.inputs[0]].shape
        decode = self.g.node(step.decode) if step.decode else None
        scale = self.value(step.scale) if step.scale else None
        bias = self.value(step.bias).float() if step.bias else None
        store_acc = self.keep_integers or decode is None
        if enc.events is not None:
            acc, y = launch.event_linear(self.kern, enc, self.value(step.wt), step.group_size,
                                         scale, bias, store_acc=store_acc,
                                         decode=decode is not None)
        elif enc.dense is not None:
            acc, y = launch.dense_linear(self.kern, enc, self.value(step.weight),
                                         step.group_size, scale, bias, store_acc=store_acc,
                                         decode=decode is not None)
        else:
            acc, y = launch.gemm_linear(self.kern, enc, self.value(step.weight),
                                        step.group_size, scale, bias, store_acc=store_acc,
                                        decode=decode is not None)
        self.peaks.append((node, enc.counts.abs().amax()))
        lead = tuple(counts_shape[:-1])
        if acc is not None:
            self.env[node.outputs[0]] = acc.view(lead + tuple(acc.shape[1:]))
        if decode is not None:
            self.env[decode.outputs[0]] = y.view(lead + (y.shape[-1],))
            self.done.add(decode.name)

    def scores(self, node) -> None:
        """``spike_scores`` on the int8 tensor cores; its bound joins the range checks."""
        q_counts, k = (self.value(i) for i in node.inputs)
        self.env[node.outputs[0]] = launch.attention_scores(self.kern, q_counts, k)
        self.score_peaks.append((node, q_counts.abs().amax()))

    def generic(self, node) -> None:
        args = [self.value(i) if i else None for i in node.inputs]
        fn = torch_kernel(node.op, args)
        if fn is not None:
            outs = fn(node_attrs(node), *args)
        else:
            kernel = reference.KERNELS.get(node.op)
            if kernel is None:
                raise SbcError(f"node '{node.name}': op '{node.op}' has no kernel")
            try:
                outs = kernel(node_attrs(node), *[a.cpu().numpy() if a is not None else None
                                                   for a in args])
            except OverflowError as e:
                raise reference.range_error(node, e) from None
        outs = outs if isinstance(outs, tuple) else (outs,)
        for name, out in zip(node.outputs, outs):
            if isinstance(out, np.ndarray) or np.isscalar(out):
                out = torch.from_numpy(np.asarray(out, order="C")).to(self.dev)
            self.env[name] = out

    def check_ranges(self) -> None:
        """Refuse what the reference refuses, with one host sync for all layers: an encoder that
        saturates (``ops.saturation``), and int32 accumulators that would wrap in
        the kernels: a layer whose peak count times its largest row of |W| could pass int32 is
        recomputed exactly by the reference kernel, which raises as it would."""
        device_peaks = [e.counts.abs().amax() for _, e in self.encoder_peaks] \
            + [p for _, p in self.peaks] + [p for _, p in self.score_peaks]
        if not device_peaks:
            return
        host = iter(torch.stack([p.float() for p in device_peaks]).cpu().numpy().tolist())
        for node, _ in self.encoder_peaks:
            reason = saturation(node_attrs(node), next(host))
            if reason:
                raise reference.range_error(node, OverflowError(reason))
        rest = list(host)
        for (node, _), peak in zip(self.peaks, rest):
            key = ("row_abs_sum", node.name)
            if key not in self.p.device_cache:
                w = self.g.params[node.inputs[1]]
                self.p.device_cache[key] = int(np.abs(w.astype(np.int64)).sum(axis=1).max())
            if int(peak) * self.p.device_cache[key] > INT32_MAX:
                self.recheck(node)
        for (node, _), peak in zip(self.score_peaks, rest[len(self.peaks):]):
            head_dim = self.env[node.inputs[0]].shape[-1]
            if int(peak) * head_dim * 128 > INT32_MAX:  # |int8| <= 128
                self.recheck(node)

    def recheck(self, node) -> None:
        """Recompute an integer node whose bound passes int32 with the reference kernel, which
        raises where the exact result would not fit (the kernel's int32 result is exact
        otherwise)."""
        args = [self.value(i).cpu().numpy() for i in node.inputs]
        try:
            reference.KERNELS[node.op](node_attrs(node), *args)
        except OverflowError as e:
            raise reference.range_error(node, e) from None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, arr in reference.check_feeds(self.g, feeds).items():
            self.env[name] = torch.from_numpy(np.asarray(arr, order="C")).to(self.dev)
        for node in self.g.nodes:
            if node.name in self.done:
                continue
            step = self.p.linears.get(node.name)
            if node.name in self.p.encodes:
                self.encode(node, self.p.encodes[node.name])
            elif node.op == "spike_scores":
                self.scores(node)
            elif step is not None and self.encoded.get(node.inputs[0]) is not None and \
                    self.encoded[node.inputs[0]].fast:
                self.linear(node, step, self.encoded[node.inputs[0]])
            else:
                self.generic(node)
        self.check_ranges()
        wanted = list(self.g.outputs)
        if self.keep_integers:
            wanted += [n.outputs[0] for n in self.g.nodes if n.op in INTEGER_OPS]
        return {name: self.value(name).cpu().numpy() for name in dict.fromkeys(wanted)}


def run(program: TritonProgram, feeds: dict[str, np.ndarray], interpret: bool = False,
        keep_integers: bool = True) -> dict[str, np.ndarray]:
    """The graph outputs (and, with ``keep_integers``, every spiked layer's counts and acc)."""
    device = device_for(interpret)
    return _Run(program, device, interpret, keep_integers).run(feeds)
