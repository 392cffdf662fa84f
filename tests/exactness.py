"""Shared checks of the exactness contract: a compiled graph's integer values (encoder counts,
synapse accumulators) equal the reference interpreter's bit for bit on Lava and on the Triton
interpreter, its float outputs within rounding. The Triton interpreter must be chosen before
Triton is imported, so its check runs in a child pytest with TRITON_INTERPRET=1."""
import os
import subprocess
import sys

import numpy as np

from sbcompile.ir.graph import Graph
from sbcompile.runtime.reference import evaluate

IN_INTERPRETER_CHILD = os.environ.get("TRITON_INTERPRET") == "1"


def assert_lava_matches_reference(graph: Graph, feeds: dict, output: str, label: str = "") -> None:
    from sbcompile.backends.lava import lower
    from sbcompile.runtime.lava.runner import simulate
    program = lower(graph)
    got = simulate(program, feeds, timeout=240)
    integer = [e["counts"] for e in program.plan["encoders"]]
    integer += [s["acc"] for s in program.plan["synapses"]]
    ref = evaluate(graph, feeds, keep=integer)
    for name in integer:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{label}{name}")
    np.testing.assert_allclose(got[output], ref[output], rtol=1e-5, atol=1e-6)


def assert_triton_matches_reference(graph: Graph, feeds: dict, output: str,
                                    label: str = "") -> None:
    from sbcompile.backends.triton import lower
    from sbcompile.runtime.triton.executor import run as run_triton
    got = run_triton(lower(graph), feeds, interpret=True)
    integer = [n.outputs[0] for n in graph.nodes if n.op in ("spike_encode", "spike_linear")]
    ref = evaluate(graph, feeds, keep=integer)
    for name in integer:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{label}{name}")
    scale = max(1.0, float(np.abs(ref[output]).max()))
    np.testing.assert_allclose(got[output], ref[output], rtol=0, atol=1e-5 * scale)


def run_interpreter_child(test_file: str, select: str, passed: int) -> None:
    """Run ``test_file``'s tests matching ``select`` under TRITON_INTERPRET=1; all must pass."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           test_file, "-k", select], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert f"{passed} passed" in proc.stdout
