"""Pre-flight: before any heavy work, the compile's peak memory estimated from the graph and
the calibration batch; past the limit (``--set max_memory=...``, else what the machine has
available) the compile is refused in one line naming the estimate and the ``--set`` key that
lowers it, instead of being killed by the kernel half way.

The estimate (bytes) is the sum of the parts held throughout and the larger of the two that
come one after the other (the passes' activations, then the lowering's programs):
- now: this process's resident set when the compile starts (interpreter, libraries, the
  loaded float graph);
- weights: the spiked graph's int8 copies and scales (a quarter of the float parameters);
- calibration: the calibration arrays, as checked (cast) once;
- programs: each target program's copy of the weights (half the float parameters), plus the
  libraries a lowering imports that are not loaded yet (PyTorch for the triton and torch
  targets: ``LIBRARY_BYTES``);
- activations: the float and the spiked reference runs of one batch side by side (the analysis
  holds both): twice the largest live set of one run, walked node by node over the graph's
  shapes at the batch's size, each node's float64 working copies included (convolutions: their
  window matrix, made in blocks of ``CONV_CHUNK_BYTES``).

The batch itself is part of the plan: ``calib_batch`` is the most samples a batch holds, and a
batch is cut smaller where its activations would pass ``BATCH_ACTIVATIONS`` (a 320x320 image
model holds tens of MB per sample), so peak memory follows one bounded batch and the model,
whatever the number of calibration samples.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.memory import available_bytes, rss_bytes
from sbcompile.runtime.reference_float import CONV_CHUNK_BYTES
from sbcompile.target_registry import target_spec

GB = 2 ** 30
WIDE = 8  # the reference computes float ops in float64
# resident memory of what lowering a target of each extra imports (measured: lowering the
# triton target first imports torch 2.13 CPU, +178 MiB), with the module that tells whether
# it is already loaded
LIBRARY_BYTES = {"gpu": ("torch", 192 << 20)}
BATCH_ACTIVATIONS = 32 << 20  # a batch's activations (both runs) are kept near this


@dataclass(frozen=True)
class Estimate:
    now: int
    weights: int  # the spiked graph's int8 copies
    programs: int  # the targets' programs
    calibration: int
    batch: int
    per_sample: int  # activations per sample of the batch (both runs)

    @property
    def activations(self) -> int:
        return self.per_sample * self.batch

    @property
    def total(self) -> int:
        return self.with_batch(self.batch)

    def with_batch(self, batch: int, programs: bool = True) -> int:
        """The peak at another batch size (without the programs): the passes' activations
        and the lowering's programs come one after the other."""
        return (self.now + self.weights + self.calibration
                + max(self.per_sample * batch, self.programs if programs else 0))


def _node_working(node, shapes: dict, params) -> int:
    """Bytes a reference kernel allocates beyond its output: float64 copies of its operands
    (parameters included: weights are widened per call) and two of its result (the wide result
    and the cast); a convolution's padded input and window matrix (a block at a time)."""
    elements = {v: math.prod(shapes.get(v) or ()) for v in node.inputs + node.outputs if v}
    work = WIDE * (sum(elements.get(i, 0) for i in node.inputs if i)
                   + 2 * sum(elements.get(o, 0) for o in node.outputs if o))
    if node.op in ("conv", "spike_conv", "conv_transpose") and shapes.get(node.inputs[1]):
        w = shapes[node.inputs[1]]
        out = shapes.get(node.outputs[0]) or ()
        window = math.prod(out[2:]) * math.prod(w[1:]) * out[0] * WIDE if out else 0
        work += min(window, CONV_CHUNK_BYTES) + WIDE * elements.get(node.inputs[0], 0)
    return work


def live_peak(graph: Graph, batch_shapes: dict[str, tuple]) -> int:
    """The largest live set (bytes) of one reference run of ``graph`` on inputs of
    ``batch_shapes``: values from the node that makes them to their last reader, plus the
    running node's working copies."""
    from sbcompile.ir.shapes import infer

    try:
        inferred = infer(graph, batch_shapes)
    except SbcError:
        inferred = {}
    shapes = {v: tuple(d if isinstance(d, int) else 1 for d in s)
              for v, s in inferred.items() if s is not None}
    size = {v: math.prod(s) * np.dtype(graph.values[v].dtype).itemsize
            for v, s in shapes.items() if v not in graph.params}
    last = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v:
                last[v] = i
    live = sum(size.get(v, 0) for v in graph.inputs)
    peak = live
    for i, node in enumerate(graph.nodes):
        made = sum(size.get(o, 0) for o in node.outputs if o)
        peak = max(peak, live + made + _node_working(node, shapes, graph.params))
        live += made
        live -= sum(size.get(v, 0) for v in set(node.inputs) if v and last.get(v) == i
                    and v not in graph.params)
        live -= sum(size.get(o, 0) for o in node.outputs if o and o not in last
                    and o not in graph.outputs)
    return peak


def estimate(graph: Graph, config: CompileConfig, calib) -> Estimate:
    """The peak of compiling ``graph`` under ``config`` with ``calib`` (a CalibrationSet or
    None)."""
    params = sum(p.nbytes for p in graph.params.values()) if config.spike else 0
    weights, programs = params // 4, len(config.targets) * params // 2
    libraries = {LIBRARY_BYTES.get(target_spec(t).extra) for t in config.targets} - {None}
    programs += sum(size for module, size in libraries if module not in sys.modules)
    if calib is None or not config.spike:
        return Estimate(rss_bytes(), weights, programs, 0, 0, 0)
    if calib.feeds is not None:
        feeds = calib.feeds
        one = max(feeds, key=lambda f: sum(np.asarray(a).nbytes for a in f.values()))
        shapes, batch = {k: np.shape(v) for k, v in one.items()}, 1
        held = sum(np.asarray(a).nbytes for f in feeds for a in f.values())
    else:
        batch = min(calib.batch_size(config.calib_batch), calib.samples)
        shapes = {k: (batch,) + v.shape[1:] for k, v in calib.arrays.items()}
        held = sum(v.nbytes for v in calib.arrays.values())
    per_sample = -(-2 * live_peak(graph, shapes) // max(batch, 1))
    if calib.feeds is None and not calib.static_batch:  # the batch is ours to choose
        batch = max(1, min(batch, BATCH_ACTIVATIONS // max(per_sample, 1)))
    return Estimate(rss_bytes(), weights, programs, held, batch, per_sample)


def memory_limit(config: CompileConfig) -> tuple[int | None, str]:
    """The limit a compile must stay under and where it comes from."""
    if config.max_memory is not None:
        return config.max_memory_bytes(), f"max_memory is {_gb(config.max_memory_bytes())}"
    free = available_bytes()
    if free is None:
        return None, ""
    return free + rss_bytes(), f"the machine has {_gb(free + rss_bytes())} available"


def check(graph: Graph, config: CompileConfig, calib) -> Estimate:
    """The estimate (its ``batch``: the samples a batch of ``calib`` holds); SbcError (one
    line) when it passes the limit, naming the key that lowers it."""
    est = estimate(graph, config, calib)
    limit, where = memory_limit(config)
    if limit is None or est.total <= limit:
        return est
    parts = [("model and weights", est.now + est.weights),
             (f"programs of {', '.join(config.targets)}", est.programs),
             (f"activations of a batch of {est.batch}", est.activations),
             ("calibration data", est.calibration)]
    parts = [f"{label} {_gb(n)}" for label, n in parts if n >= 2 ** 20]
    hint = _hint(est, limit, config, calib)
    raise SbcError(f"compiling needs about {_gb(est.total)} ({', '.join(parts)}) but {where}: "
                   f"{hint}")


def _hint(est: Estimate, limit: int, config: CompileConfig, calib) -> str:
    fits = [b for b in (32, 16, 8, 4, 2, 1) if b < est.batch and est.with_batch(b) <= limit]
    static = calib is not None and (calib.feeds is not None or calib.static_batch)
    if fits and not static:
        return (f"--set calib_batch={fits[0]} needs about {_gb(est.with_batch(fits[0]))} "
                "(or raise max_memory)")
    bare = est.with_batch(est.batch, programs=False)
    if config.targets and bare <= limit:
        return f"--set targets= (no stored programs) needs about {_gb(bare)} (or raise max_memory)"
    return (f"even one sample a batch and no targets need about "
            f"{_gb(est.with_batch(1, programs=False))}: raise max_memory or use a larger machine")


def _gb(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 2 ** 20:.0f} MB"
