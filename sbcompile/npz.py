"""The input-file boundary: reading and writing the `.npz` files of the CLI (keyed by graph input
/ output names). A file that is not an `.npz` archive (a lone `.npy` array, a zip of something
else, a pickle) is an error naming it; nothing is ever unpickled."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.output_path import write_atomic


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise SbcError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise SbcError(f"{path}: not a readable .npz file ({_first_line(e)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise SbcError(f"{path}: a single .npy array, not an .npz archive keyed by input name "
                       "(save it with numpy.savez(path, NAME=array))")
    try:
        with data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zipfile.LargeZipFile,
            NotImplementedError, RuntimeError) as e:
        raise SbcError(f"{path}: not a readable .npz file ({_first_line(e)})") from None


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomic(Path(path), lambda f: np.savez(f, **arrays))


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
