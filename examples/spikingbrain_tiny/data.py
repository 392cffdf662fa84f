"""The offline corpus: the docstrings of Python's own standard library, read from the installed
source files with ``ast`` (nothing imported, nothing downloaded), as ASCII characters.

Modules are split by name, not by position, so the held-out text comes from modules the model
never saw: every module whose sorted index is a multiple of ``HELDOUT_EVERY`` is held out.
``python data.py OUT.npz`` saves the corpus (``train``, ``heldout``), for training elsewhere.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import sysconfig
from pathlib import Path

import numpy as np

VOCAB = 128
HELDOUT_EVERY = 10


def encode(text: str) -> np.ndarray:
    """ASCII code points (int64); other characters become '?', tabs and other control
    characters but newline become spaces."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    codes = np.where(codes < VOCAB, codes, ord("?"))
    return np.where((codes < 32) & (codes != 10), ord(" "), codes)


def decode(ids) -> str:
    return "".join(chr(int(i)) for i in ids)


def stdlib_modules() -> list[Path]:
    """The top-level pure-Python modules of the running interpreter's standard library."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def docstrings(path: Path) -> list[str]:
    """The module, class and function docstrings of one source file, cleaned of indentation."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = (ast.get_docstring(node, clean=False) for node in ast.walk(tree)
             if isinstance(node, kinds))
    return [inspect.cleandoc(d) for d in found if d and len(d.strip()) > 1]


def corpus() -> tuple[np.ndarray, np.ndarray]:
    """(training ids, held-out ids): docstrings joined by blank lines, split by module."""
    train, held = [], []
    for index, path in enumerate(stdlib_modules()):
        (held if index % HELDOUT_EVERY == 0 else train).extend(docstrings(path))
    return encode("\n\n".join(train)), encode("\n\n".join(held))


def windows(ids: np.ndarray, length: int, count: int) -> np.ndarray:
    """``count`` non-overlapping windows of ``length`` tokens, evenly spread over ``ids``."""
    starts = np.linspace(0, len(ids) - length, count).astype(np.int64)
    return np.stack([ids[s:s + length] for s in starts])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="save the corpus as an .npz file")
    parser.add_argument("out")
    train_ids, held_ids = corpus()
    np.savez_compressed(parser.parse_args().out, train=train_ids, heldout=held_ids)
