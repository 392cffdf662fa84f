"""The ONNX converter registry: ``_converter`` registers a converter for op types, ``CONVERTERS``
holds them. The converter modules import only this (``onnx_converters`` imports them all, so
the registry is whole wherever a converter is looked up, and no module imports back)."""
from __future__ import annotations

from typing import Callable

from sbcompile.frontends.onnx_lowering import NodeView

# (domain, op_type) -> converter; the default domain is "".
CONVERTERS: dict[tuple[str, str], Callable[[NodeView], None]] = {}


def _converter(*op_types: str, attrs: tuple[str, ...] = (), domain: str = ""):
    """Register ``fn`` for the op types. A node setting an attribute outside ``attrs`` is refused:
    an attribute a converter does not read could change the meaning."""
    def register(fn):
        def checked(n: NodeView) -> None:
            unknown = sorted(set(n.attrs) - set(attrs))
            if unknown:
                raise n.refuse(f"attribute '{unknown[0]}' is not supported")
            fn(n)
        for op_type in op_types:
            CONVERTERS[(domain, op_type)] = checked
        return fn
    return register
