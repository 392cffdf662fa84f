"""Import hooks that let the unmodified lava-nc 0.10.0 wheel load on Python 3.11.

Two of the wheel's modules fail to import here, each for one reason, and each is patched only
while (and only while) that module first executes; no file of Lava is changed:

- ``lava.magma.compiler.var_model`` declares ``ByteEncoder`` as a plain dataclass and uses
  instances of it as field defaults of other dataclasses. Python 3.11 rejects an unhashable
  default as mutable; the hook builds ``ByteEncoder`` with ``unsafe_hash=True``.
- ``lava.magma.runtime.message_infrastructure.multiprocessing`` calls
  ``multiprocessing.set_start_method('fork')``, which raises once anything in the process has
  fixed the start method (tqdm creates a multiprocessing lock the first time a progress bar
  starts, and torch.fx's interpreter starts one): the hook lets a request for the method
  already in effect pass, as Lava wants it, and leaves any other request to raise.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.abc
import importlib.machinery
import multiprocessing
import sys

VAR_MODEL = "lava.magma.compiler.var_model"
MESSAGE_INFRASTRUCTURE = "lava.magma.runtime.message_infrastructure.multiprocessing"
_HASHABLE_CLASS = "ByteEncoder"


@contextlib.contextmanager
def _hashable_byte_encoder():
    original = dataclasses.dataclass

    def dataclass(cls=None, /, **kwargs):
        def wrap(c):
            if c.__name__ == _HASHABLE_CLASS and c.__module__ == VAR_MODEL:
                kwargs.setdefault("unsafe_hash", True)
            return original(c, **kwargs)
        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = dataclass
    try:
        yield
    finally:
        dataclasses.dataclass = original


@contextlib.contextmanager
def _start_method_already_set_is_fine():
    original = multiprocessing.set_start_method

    def set_start_method(method, force=False):
        if not force and multiprocessing.get_start_method(allow_none=True) == method:
            return
        original(method, force=force)

    multiprocessing.set_start_method = set_start_method
    try:
        yield
    finally:
        multiprocessing.set_start_method = original


PATCHES = {VAR_MODEL: _hashable_byte_encoder,
           MESSAGE_INFRASTRUCTURE: _start_method_already_set_is_fine}


def install() -> None:
    """Put the hook in front of the import system; idempotent, a no-op once the modules loaded."""
    if all(name in sys.modules for name in PATCHES):
        return
    if not any(isinstance(f, _PatchingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchingFinder())


class _PatchingFinder(importlib.abc.MetaPathFinder):
    """Finds the real spec of a patched module and wraps its loader; each patch is used once,
    and the finder removes itself when none is left."""

    def __init__(self):
        self._pending = {name: patch for name, patch in PATCHES.items()
                         if name not in sys.modules}

    def find_spec(self, fullname, path, target=None):
        patch = self._pending.pop(fullname, None)
        if patch is None:
            return None
        if not self._pending:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchedLoader(spec.loader, patch)
        return spec


class _PatchedLoader(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with self._patch():
            self._loader.exec_module(module)
