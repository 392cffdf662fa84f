"""Executes a Triton program: spiked layers through the kernels, float ops through PyTorch, the
rest through the numpy reference kernels. Values stay on the device between nodes."""
from __future__ import annotations

import math

import numpy as np
import torch

from sbcompile.errors import SbcError
from sbcompile.runtime import reference
from sbcompile.ir.ops import count_limit, node_attrs, threshold_axes, threshold_shape
from sbcompile.runtime.triton import launch
from sbcompile.runtime.triton.loader import kernels
from sbcompile.runtime.triton.program import TritonProgram
from sbcompile.runtime.triton.torch_ops import torch_kernel

INTEGER_OPS = ("spike_encode", "spike_linear", "spike_conv")


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
        for step in program.linears.values():
            counts = self.g.node(step.node).inputs[0]
            self.readers.setdefault(counts, []).append(step)
        self.consumers = self.g.consumers()

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
        lead = tuple(counts_shape[:-1])
        if acc is not None:
            self.env[node.outputs[0]] = acc.view(lead + tuple(acc.shape[1:]))
        if decode is not None:
            self.env[decode.outputs[0]] = y.view(lead + (y.shape[-1],))
            self.done.add(decode.name)

    def generic(self, node) -> None:
        args = [self.value(i) if i else None for i in node.inputs]
        fn = torch_kernel(node.op, args)
        if fn is not None:
            outs = fn(node_attrs(node), *args)
        else:
            kernel = reference.KERNELS.get(node.op)
            if kernel is None:
                raise SbcError(f"node '{node.name}': op '{node.op}' has no kernel")
            outs = kernel(node_attrs(node), *[a.cpu().numpy() if a is not None else None
                                               for a in args])
        outs = outs if isinstance(outs, tuple) else (outs,)
        for name, out in zip(node.outputs, outs):
            if isinstance(out, np.ndarray) or np.isscalar(out):
                out = torch.from_numpy(np.asarray(out, order="C")).to(self.dev)
            self.env[name] = out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, arr in reference.check_feeds(self.g, feeds).items():
            self.env[name] = torch.from_numpy(np.asarray(arr, order="C")).to(self.dev)
        for node in self.g.nodes:
            if node.name in self.done:
                continue
            step = self.p.linears.get(node.name)
            if node.name in self.p.encodes:
                self.encode(node, self.p.encodes[node.name])
            elif step is not None and self.encoded.get(node.inputs[0]) is not None and \
                    self.encoded[node.inputs[0]].fast:
                self.linear(node, step, self.encoded[node.inputs[0]])
            else:
                self.generic(node)
        wanted = list(self.g.outputs)
        if self.keep_integers:
            wanted += [n.outputs[0] for n in self.g.nodes if n.op in INTEGER_OPS]
        return {name: self.value(name).cpu().numpy() for name in dict.fromkeys(wanted)}


def run(program: TritonProgram, feeds: dict[str, np.ndarray], interpret: bool = False,
        keep_integers: bool = True) -> dict[str, np.ndarray]:
    """The graph outputs (and, with ``keep_integers``, every spiked layer's counts and acc)."""
    device = device_for(interpret)
    return _Run(program, device, interpret, keep_integers).run(feeds)
