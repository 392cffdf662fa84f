"""Running a compiled model on a target, with one result type for every target.

Backends lower at compile time (``backends/``, ``sbcompile.pipeline.lower_targets``); here a
target only runs the program an artifact stores. Every program follows ``TargetProgram``: it is
saved as artifact members under ``<target>/`` and loaded back with its graph. An artifact without
a target's program is an error that says how to compile one, never a silent lowering.
"""
from __future__ import annotations

import importlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node
from sbcompile.ir.ops import INTEGER_OPS, node_attrs, saturation
from sbcompile.target_registry import PROGRAM_TARGETS, TARGETS, target_spec

INT32_MAX = np.iinfo(np.int32).max


class TargetProgram(Protocol):
    """A lowered program: what a target runs, saved as artifact members ``<target>/...``."""

    def to_members(self) -> dict[str, bytes]: ...

    @classmethod
    def from_members(cls, members: dict[str, bytes], graph: Graph) -> "TargetProgram": ...


@dataclass
class RunResult:
    """One run: the graph outputs; the exact integer values of the spiked layers (each
    encoder's counts and each layer's accumulator, keyed by IR value name; empty for a float
    run); wall-clock seconds (``run_s`` always, plus what the target measures); and on Lava the
    op counts measured from the simulated spikes, per layer."""

    target: str
    outputs: dict[str, np.ndarray]
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    op_counts: dict[str, dict] = field(default_factory=dict)


def integer_values(graph: Graph) -> list[str]:
    """The counts and accumulators of every spiked layer (the bit-exact path)."""
    return [n.outputs[0] for n in graph.nodes if n.op in INTEGER_OPS]


def program_class(target: str) -> type:
    """The ``TargetProgram`` class of a target that stores one (from the registry)."""
    spec = target_spec(target, stored=True)
    module, cls = spec.program.split(":")
    return getattr(importlib.import_module(module), cls)


def stored_program(programs: dict[str, bytes], graph: Graph, target: str,
                   report: dict | None = None) -> TargetProgram:
    """The ``target`` program among an artifact's members; SbcError when there is none."""
    if not any(k.startswith(f"{target}/") for k in programs):
        status = (report or {}).get("targets", {}).get(target, {})
        why = f" (lowering it failed: {status['reason']})" if status.get("reason") else ""
        raise SbcError(f"the artifact holds no {target} program{why}; compile with "
                       f"--set targets={target} (or a list with it) to store one")
    return program_class(target).from_members(programs, graph)


def interpret_default() -> bool:
    """Triton's own switch: ``TRITON_INTERPRET=1`` runs the kernels on the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def run_reference(graph: Graph, feeds: dict[str, np.ndarray],
                  integers: bool = True) -> RunResult:
    from sbcompile.runtime import reference

    keep = integer_values(graph) if integers else []
    env = reference.evaluate(graph, feeds, keep=keep)
    return RunResult("reference", {k: env[k] for k in graph.outputs}, {k: env[k] for k in keep})


def run_lava(program, feeds: dict[str, np.ndarray], *, form: str = "fused",
             timeout: float = 120.0, progress: Callable[[int], None] | None = None) -> RunResult:
    """Simulate a Lava program in a supervised child process."""
    from sbcompile.runtime.lava.runner import simulate

    run = simulate(program, feeds, form=form, timeout=timeout, progress=progress)
    outputs = {k: run[k] for k in program.plan["outputs"]}
    counts = {k: v for k, v in run.items() if k not in outputs}
    refuse_saturated([Node.from_json(e["node"]) for e in program.plan["encoders"]], counts)
    return RunResult("lava", outputs, counts, dict(run.timing_s), run.op_counts)


def refuse_saturated(encoders: list[Node], counts: dict[str, np.ndarray]) -> None:
    """Refuse a run whose encoders reached their safety clamp (``ops.saturation``), as the
    reference does, from the counts a target returned."""
    check_ranges(None, encoders, {k: np.abs(v).max(initial=0) for k, v in counts.items()},
                 counts.__getitem__)


def check_ranges(graph: Graph | None, nodes: list[Node], peaks: dict[str, int],
                 fetch: Callable[[str], np.ndarray]) -> None:
    """The post-run range checks every target shares, from the peak |value| of each integer
    value a run produced (``peaks``): refuse what the reference refuses, an encoder that
    reached its safety clamp (``ops.saturation``), and an integer product whose bound (the peak
    |count| of its input times its largest row of |W|, or 128 * D for attention scores) passes
    int32; such a layer is recomputed on the host by the reference kernel (its inputs from
    ``fetch``), which raises where the exact result would not fit."""
    from sbcompile.runtime import reference

    for node in nodes:
        if node.op == "spike_encode" and node.outputs[0] in peaks:
            reason = saturation(node_attrs(node), peaks[node.outputs[0]])
            if reason:
                raise reference.range_error(node, OverflowError(reason))
        elif node.op in ("spike_linear", "spike_conv", "spike_scores") and \
                node.inputs[0] in peaks:
            peak = int(peaks[node.inputs[0]])
            if node.op == "spike_scores":
                fits = peak * 128 * int(graph.values[node.inputs[0]].shape[-1]) <= INT32_MAX
            else:  # the weight's row sums only when the coarse bound 128 * fan-in does not fit
                w = graph.params[node.inputs[1]]
                fits = peak * 128 * (w.size // w.shape[0]) <= INT32_MAX or peak * int(
                    np.abs(w.astype(np.int64)).reshape(w.shape[0], -1).sum(axis=1).max()
                ) <= INT32_MAX
            if not fits:
                args = [fetch(i) for i in node.inputs]
                try:
                    reference.KERNELS[node.op](node_attrs(node), *args)
                except OverflowError as e:
                    raise reference.range_error(node, e) from None


def resolve_device(device: str | None) -> str:
    """``auto`` (or None): the GPU when torch sees one, else the CPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SbcError(f"device '{device}' needs a CUDA GPU and none is available; use "
                       "--device cpu")
    return device


def run_torch(program, feeds: dict[str, np.ndarray], *, device: str | None = None,
              keep_integers: bool = True) -> RunResult:
    """Run the PyTorch program on ``device`` (auto: the GPU if there is one). The range checks
    read one peak per integer value; the values themselves come back with ``keep_integers``."""
    import torch

    from sbcompile.runtime import reference

    module = program.module(resolve_device(device))
    dev = next(module.buffers()).device if any(True for _ in module.buffers()) else "cpu"
    checked = reference.check_feeds(program.graph, feeds)
    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in checked.items()}
    with torch.no_grad():
        outputs, integers = module.with_integers(**inputs)
        peaks = {k: v.abs().amax() if v.numel() else torch.zeros((), dtype=v.dtype)
                 for k, v in integers.items()}
        host_peaks = dict(zip(peaks, torch.stack(list(peaks.values())).cpu().tolist())) \
            if peaks else {}
    nodes = [n for n in program.graph.nodes if n.op in INTEGER_OPS]
    check_ranges(program.graph, nodes, host_peaks,
                 lambda name: integers[name].cpu().numpy() if name in integers
                 else checked.get(name, program.graph.params.get(name)))
    result = {k: v.cpu().numpy() for k, v in zip(program.graph.outputs, outputs)}
    counts = {k: v.cpu().numpy() for k, v in integers.items()} if keep_integers else {}
    return RunResult("torch", result, counts)


def run_triton(program, feeds: dict[str, np.ndarray], *, interpret: bool | None = None,
               keep_integers: bool = True) -> RunResult:
    """Run a Triton program on the GPU, or on Triton's CPU interpreter (``interpret``; None
    follows ``TRITON_INTERPRET``). A process whose Triton is already in the other mode (or
    whose ``TRITON_INTERPRET`` asks for it before Triton is imported) runs it in a child
    process (``runtime/triton/child.py``)."""
    from sbcompile.runtime.triton.child import run_in_child
    from sbcompile.runtime.triton.executor import run
    from sbcompile.runtime.triton.loader import triton_interprets

    interpret = interpret_default() if interpret is None else interpret
    mode = triton_interprets()
    if mode is None:
        mode = interpret_default() if "TRITON_INTERPRET" in os.environ else interpret
    if mode == interpret:
        env = run(program, feeds, interpret=interpret, keep_integers=keep_integers)
    else:
        env = run_in_child(program, feeds, interpret, keep_integers)
    outputs = {k: env[k] for k in program.graph.outputs}
    return RunResult("triton", outputs, {k: v for k, v in env.items() if k not in outputs})


def run_onnxruntime(program, feeds: dict[str, np.ndarray], *, batch_size: int = 64,
                    progress: bool = True, keep_integers: bool = True) -> RunResult:
    """Run the onnx-qdq export in a default onnxruntime session, in batches."""
    env = program.run(feeds, batch_size, progress, keep_integers)
    refuse_saturated([n for n in program.graph.nodes if n.op == "spike_encode"], env)
    outputs = {k: env[k] for k in program.graph.outputs}
    return RunResult("onnxruntime", outputs, {k: v for k, v in env.items() if k not in outputs})


def run_artifact(art, target: str, feeds: dict[str, np.ndarray], *, use_float: bool = False,
                 interpret: bool | None = None, timeout: float = 120.0,
                 device: str | None = None) -> RunResult:
    """Run an artifact's compiled graph (or, ``use_float``, its float baseline, on the
    reference only) on ``target`` with the program stored for it (``device``: the torch
    target's, auto by default)."""
    from sbcompile.runtime import reference

    target_spec(target)
    feeds = reference.guarded_feeds(art.graph, feeds)  # inputs fixed at compile: checked, dropped
    if use_float and target != "reference":
        raise SbcError(f"--float runs on the reference target only, not '{target}'")
    empty = [k for k, v in feeds.items() if np.asarray(v).size == 0]
    if empty:  # every target refuses it alike (an empty batch has no samples to run)
        raise SbcError(f"input '{empty[0]}' is empty (shape {list(np.shape(feeds[empty[0]]))}):"
                       " nothing to run")
    start = time.perf_counter()
    if target == "reference":
        result = run_reference(art.baseline if use_float else art.graph, feeds, not use_float)
    else:
        program = stored_program(art.programs, art.graph, target, art.report)
        if target == "lava":
            result = run_lava(program, feeds, timeout=timeout)
        elif target == "triton":
            result = run_triton(program, feeds, interpret=interpret)
        elif target == "torch":
            result = run_torch(program, feeds, device=device)
        else:
            result = run_onnxruntime(program, feeds)
    result.timings["run_s"] = time.perf_counter() - start
    return result
