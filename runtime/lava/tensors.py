"""Where a simulation's processes leave tensors for each other and results for the caller: files
in the run folder, written once, named by a digest of the value (or process) name.

A tensor is written completely before its producer raises the flag on its Lava port, and read
only after the flag arrived, so Lava's channel orders the two; a result file is written before
the process sets its ``done`` Var. Lava's own Var reads move one element per message, and its
ports copy their whole width every step: neither scales to feature maps of a real CNN.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

TENSOR_DIR, RESULT_DIR, FINISHED_DIR = "tensors", "results", "finished"


def _file(run_dir: str | Path, folder: str, name: str, suffix: str) -> Path:
    digest = hashlib.sha1(name.encode()).hexdigest()[:24]
    path = Path(run_dir) / folder
    path.mkdir(exist_ok=True)
    return path / f"{digest}{suffix}"


def put_tensor(run_dir: str | Path, name: str, value: np.ndarray) -> None:
    path = _file(run_dir, TENSOR_DIR, name, ".npy")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(value), allow_pickle=False)
    os.replace(tmp, path)


def get_tensor(run_dir: str | Path, name: str) -> np.ndarray:
    return np.load(_file(run_dir, TENSOR_DIR, name, ".npy"), allow_pickle=False)


def put_result(run_dir: str | Path, process: str, arrays: dict[str, np.ndarray]) -> None:
    path = _file(run_dir, RESULT_DIR, process, ".npz")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


def mark_finished(run_dir: str | Path, layer: str) -> None:
    """Note a spike layer whose window is over (the progress the runner shows)."""
    _file(run_dir, FINISHED_DIR, layer, "").touch()


def get_result(run_dir: str | Path, process: str) -> dict[str, np.ndarray]:
    with np.load(_file(run_dir, RESULT_DIR, process, ".npz"), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def finished(run_dir: str | Path) -> int:
    """Spike layers (encoders) whose windows are over so far."""
    try:
        return len(os.listdir(Path(run_dir) / FINISHED_DIR))
    except FileNotFoundError:
        return 0
