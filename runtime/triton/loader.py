"""The kernel package, compiled for the GPU or interpreted on the CPU.

Triton fixes its mode when it is first imported: with ``TRITON_INTERPRET=1`` every ``@triton.jit``
function, Triton's own library included, becomes an interpreter function that runs on CPU
tensors; without it they compile for a GPU, and the two cannot mix in one process. ``kernels``
selects the mode on first use (setting the variable before Triton is imported) and refuses,
with a clear message, a mode the process can no longer switch to.
"""
from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from sbcompile.errors import SbcError

_PACKAGE = "sbcompile.runtime.triton.kernels"


def triton_interprets() -> bool | None:
    """Whether this process's Triton runs interpreted; None while Triton is not imported."""
    if "triton.language" not in sys.modules:
        return None
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction
    return isinstance(standard.cdiv, InterpretedFunction)


def kernels(interpret: bool) -> ModuleType:
    """The kernel package, interpreted (True) or compiled for the GPU (False)."""
    mode = triton_interprets()
    if mode is None:
        if interpret:
            os.environ["TRITON_INTERPRET"] = "1"
        elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            raise SbcError("TRITON_INTERPRET is set: unset it to run the Triton target on a GPU")
        mode = interpret
    if mode != interpret:
        want = "interpreted" if interpret else "on the GPU"
        raise SbcError(f"Triton kernels cannot run {want} in this process: Triton was already "
                       "imported in the other mode (set TRITON_INTERPRET=1 before anything "
                       "imports triton to interpret, or leave it unset for the GPU)")
    return importlib.import_module(_PACKAGE)
