"""The kernel package, compiled for the GPU or interpreted on the CPU.

Triton decides at definition time whether ``@triton.jit`` builds GPU kernels or interpreter
functions, from ``TRITON_INTERPRET``. The package is imported normally in the mode the
environment selects; the other mode gets a private copy of the package, executed with the
variable set (or cleared) only while its modules are defined, so nothing leaks to the caller's
process or to other Triton code.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

_PACKAGE = "sbcompile.runtime.triton.kernels"
_lock = threading.Lock()


def _env_interprets() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


@contextlib.contextmanager
def _interpret_env(interpret: bool):
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old


def kernels(interpret: bool) -> ModuleType:
    """The kernel package whose jit functions run interpreted (True) or compiled (False)."""
    if interpret == _env_interprets():
        return importlib.import_module(_PACKAGE)
    alias = f"{_PACKAGE}_{'interpreted' if interpret else 'compiled'}"
    with _lock:
        if alias in sys.modules:
            return sys.modules[alias]
        init = Path(importlib.util.find_spec(_PACKAGE).origin)
        spec = importlib.util.spec_from_file_location(
            alias, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module
        try:
            with _interpret_env(interpret):
                spec.loader.exec_module(module)
        except BaseException:
            for name in [n for n in sys.modules if n == alias or n.startswith(alias + ".")]:
                del sys.modules[name]
            raise
        return module
