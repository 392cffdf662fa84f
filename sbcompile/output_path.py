"""The output-path boundary: every file sbcompile writes goes through ``check_output_path`` (before
the work, so a long compile is not wasted on a path that cannot be written) and ``write_atomic``
(serialise in memory, write a temporary file beside the target, fsync, rename into place).

Any fault (empty path, a directory, a missing or read-only folder, a full disk) is an SbcError
naming the path, and the target is left as it was: never half written.
"""
from __future__ import annotations

import errno
import io
import os
import tempfile
from pathlib import Path
from typing import Callable

from sbcompile.errors import SbcError


def check_output_path(path: str | Path, what: str = "output") -> Path:
    """The path as a Path if a file can be written there; else an SbcError saying why."""
    text = str(path)
    if not text.strip():
        raise SbcError(f"the {what} path is empty")
    path = Path(text)
    if path.is_dir():
        raise SbcError(f"{text}: is a folder, not a file ({what} path)")
    folder = path.parent
    if not folder.exists():
        raise SbcError(f"{text}: folder {folder} does not exist")
    if not folder.is_dir():
        raise SbcError(f"{text}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SbcError(f"{text}: folder {folder} is not writable")
    if path.exists() and not path.is_file():
        raise SbcError(f"{text}: exists and is not a regular file")
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create the folder (and its parents) if needed; an SbcError if it cannot be written."""
    text = str(path)
    if not text.strip():
        raise SbcError(f"the {what} path is empty")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise SbcError(f"{text}: exists and is not a folder ({what})")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SbcError(f"{text}: cannot create the {what} ({_reason(e)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SbcError(f"{text}: the {what} is not writable")
    return path


def write_atomic(path: str | Path, write: Callable[[io.BufferedIOBase], object]) -> None:
    """Call ``write(file)`` on an in-memory buffer, then put its bytes at ``path`` through a
    temporary file in the same folder renamed into place. Serialising first means a library
    writer (np.savez, zipfile) never meets a full disk half way; on any failure the temporary file
    is removed and ``path`` is untouched."""
    buffer = io.BytesIO()
    write(buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> None:
    """``data`` at ``path`` atomically (see ``write_atomic``); OSError becomes SbcError."""
    path = check_output_path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise SbcError(f"{path}: cannot write ({_reason(e)}); nothing was written") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _reason(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    if e.errno == errno.EROFS:
        return "read-only file system"
    return e.strerror or type(e).__name__
