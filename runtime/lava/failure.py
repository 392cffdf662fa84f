"""The failure record of a simulation run: the first process to fail writes one JSON file into
the run directory, which the supervisor watches (a failing Lava process model can otherwise hang
``run()`` and ``stop()``)."""
from __future__ import annotations

import json
import os
from pathlib import Path

FAILURE_FILE = "failure.json"


def record_failure(run_dir: str | Path | None, where: str, exc: BaseException) -> None:
    """Write ``{where, error}`` unless a failure is already recorded (the first one wins)."""
    if run_dir is None:
        return
    message = str(exc) or type(exc).__name__
    tmp = Path(run_dir) / f"{FAILURE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"where": where, "error": message, "type": type(exc).__name__}))
    try:
        os.link(tmp, Path(run_dir) / FAILURE_FILE)  # atomic and exclusive
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def read_failure(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / FAILURE_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
