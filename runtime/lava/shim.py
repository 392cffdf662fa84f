"""Import hook that lets the unmodified lava-nc 0.10.0 wheel load on Python 3.11.

The wheel's ``lava.magma.compiler.var_model`` declares ``ByteEncoder`` as a plain dataclass and
uses instances of it as field defaults of other dataclasses. Python 3.11 rejects an unhashable
default as mutable, so the module fails to import. While (and only while) that one module first
executes, :func:`install` builds ``ByteEncoder`` with ``unsafe_hash=True``; nothing else is
touched and no file of Lava is changed.
"""
from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import sys

TARGET_MODULE = "lava.magma.compiler.var_model"
_HASHABLE_CLASS = "ByteEncoder"


def install() -> None:
    """Put the hook in front of the import system; idempotent, a no-op once the module loaded."""
    if TARGET_MODULE in sys.modules:
        return
    if not any(isinstance(f, _VarModelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _VarModelFinder())


class _VarModelFinder(importlib.abc.MetaPathFinder):
    """Finds the real module spec and wraps its loader; removes itself after one use."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _HashableByteEncoderLoader(spec.loader)
        return spec


class _HashableByteEncoderLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        original = dataclasses.dataclass

        def dataclass(cls=None, /, **kwargs):
            def wrap(c):
                if c.__name__ == _HASHABLE_CLASS and c.__module__ == TARGET_MODULE:
                    kwargs.setdefault("unsafe_hash", True)
                return original(c, **kwargs)
            return wrap if cls is None else wrap(cls)

        dataclasses.dataclass = dataclass
        try:
            self._loader.exec_module(module)
        finally:
            dataclasses.dataclass = original
