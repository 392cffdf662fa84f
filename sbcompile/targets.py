"""Running an artifact on a target: the reference interpreter, Lava, Triton or onnxruntime (the
QDQ export, for data-set-scale evaluation on the CPU)."""
from __future__ import annotations

import numpy as np

from sbcompile.artifact import Artifact
from sbcompile.errors import SbcError
from sbcompile.passes.energy import synaptic_ops
from sbcompile.runtime import reference

TARGETS = ("reference", "lava", "triton", "onnxruntime")


class OutputsWithOps(dict):
    """Graph outputs plus the op counts a Lava simulation measured (``op_counts``)."""

    op_counts: dict


def simulated_vs_compiled(op_counts: dict, report: dict, samples: int) -> list[dict]:
    """Per spiked layer: each count measured in the simulation beside the compile-time
    estimate for ``samples`` inferences (the report's calibration average times samples; equal
    when the simulation ran on the calibration inputs)."""
    rows = []
    for layer in report.get("layers", []):
        sim = op_counts.get(layer["name"], {})
        ops = layer.get("ops", {})
        estimate = {"synaptic_ops": synaptic_ops(ops), "spike_messages": ops.get("spike_messages", 0),
                    "neuron_updates": ops.get("neuron_updates", 0)}
        rows.append({"layer": layer["name"],
                     **{k: {"simulated": sim.get(k), "compile_time": round(v * samples)}
                        for k, v in estimate.items()}})
    return rows


def run_target(art: Artifact, feeds: dict[str, np.ndarray], target: str = "reference",
               use_float: bool = False, interpret: bool = False,
               timeout: float = 120.0) -> dict[str, np.ndarray]:
    """Graph outputs of the compiled (or, with ``use_float``, the baseline) graph; Lava and
    Triton run the programs stored in the artifact (lowered again if it has none).
    ``interpret`` runs Triton's kernels on the CPU interpreter; ``timeout`` bounds a Lava
    simulation. A Lava run's op counts measured from its spikes come back as the attribute
    ``op_counts`` of the returned dict (see ``simulated_vs_compiled``)."""
    graph = art.baseline if use_float else art.graph
    if target == "reference":
        return reference.run(graph, feeds)
    if target == "onnxruntime":  # the float baseline runs there too (as its own export)
        from sbcompile.runtime.onnxruntime_target import run_onnxruntime

        return run_onnxruntime(graph, feeds)
    if use_float:
        raise SbcError(f"--float runs on the reference target only, not '{target}'")
    if target == "lava":
        from sbcompile.backends.lava import run_lava

        result = run_lava(art, feeds, timeout=timeout)
        outputs = OutputsWithOps({k: result[k] for k in graph.outputs})
        outputs.op_counts = result.op_counts
        return outputs
    elif target == "triton":
        from sbcompile.backends.triton import run_triton

        result = run_triton(art, feeds, interpret=interpret)
    else:
        raise SbcError(f"unknown target '{target}' (known: {', '.join(TARGETS)})")
    return {k: result[k] for k in graph.outputs}
