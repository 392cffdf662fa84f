"""A Triton run in a child process, for a process whose Triton is in the other mode.

Triton fixes its mode (interpreted on the CPU, or compiled for a GPU) when it is first imported,
and other libraries import it as a side effect: torch's ONNX exporter (``dynamo=True``) does, so
a process that exported a PyTorch module has Triton in GPU mode before sbcompile ever asks for the
interpreter. ``run_in_child`` runs the program in a fresh interpreter whose ``TRITON_INTERPRET``
selects the mode asked for: ``python -m sbcompile.runtime.triton.child RUN_DIR`` reads the graph,
the program, the feeds and the options RUN_DIR holds and writes ``result.npz``, or ``error.json``
(an ``SbcError``'s message, raised again in the parent). The child is ended with the call: on
return, on an exception (a ``--timeout`` alarm included) and on an interrupt.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph

GRAPH, PARAMS, FEEDS, OPTIONS = "graph.json", "params.safetensors", "feeds.npz", "options.json"
RESULT, ERROR = "result.npz", "error.json"


def run_in_child(program, feeds: dict[str, np.ndarray], interpret: bool,
                 keep_integers: bool) -> dict[str, np.ndarray]:
    """``executor.run(program, feeds, interpret, keep_integers)`` in a child process."""
    with tempfile.TemporaryDirectory(prefix="sbcompile-triton-") as tmp:
        run = Path(tmp)
        graph = program.graph
        (run / GRAPH).write_text(json.dumps(graph.to_json()))
        (run / PARAMS).write_bytes(st_save({k: np.ascontiguousarray(v)
                                            for k, v in graph.params.items()}))
        for member, blob in program.to_members().items():
            (run / Path(member).name).write_bytes(blob)
        np.savez(run / FEEDS, **feeds)
        (run / OPTIONS).write_text(json.dumps({"interpret": interpret,
                                               "keep_integers": keep_integers}))
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        if interpret:
            env["TRITON_INTERPRET"] = "1"
        proc = subprocess.Popen([sys.executable, "-m", "sbcompile.runtime.triton.child",
                                 str(run)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            log, _ = proc.communicate()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if (run / ERROR).exists():
            raise SbcError(json.loads((run / ERROR).read_text())["error"])
        if proc.returncode != 0 or not (run / RESULT).exists():
            tail = log.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise SbcError(f"the Triton run in a child process failed (exit {proc.returncode}):"
                           f" {tail[0]}")
        with np.load(run / RESULT, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def main(run_dir: str) -> int:
    from sbcompile.runtime.triton.executor import run
    from sbcompile.runtime.triton.program import PLAN_MEMBER, WEIGHTS_MEMBER, TritonProgram

    path = Path(run_dir)
    try:
        options = json.loads((path / OPTIONS).read_text())
        graph = Graph.from_json(json.loads((path / GRAPH).read_text()),
                                st_load((path / PARAMS).read_bytes()))
        program = TritonProgram.from_members(
            {m: (path / Path(m).name).read_bytes() for m in (PLAN_MEMBER, WEIGHTS_MEMBER)},
            graph)
        with np.load(path / FEEDS, allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
        env = run(program, feeds, interpret=options["interpret"],
                  keep_integers=options["keep_integers"])
    except SbcError as e:
        (path / ERROR).write_text(json.dumps({"error": str(e)}))
        return 2
    np.savez(path / RESULT, **env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
