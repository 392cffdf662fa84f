"""Reading and writing the `.npz` files of the CLI (keyed by graph input/output names)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sbcompile.artifact import write_atomic
from sbcompile.errors import SbcError


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise SbcError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise SbcError(f"{path}: not a readable .npz file ({e})") from None


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomic(Path(path), lambda f: np.savez(f, **arrays))
