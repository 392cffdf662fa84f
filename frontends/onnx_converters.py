"""Every ONNX converter, looked up by ``converter_for``: importing this module imports each
module that registers converters (``onnx_registry``)."""
from __future__ import annotations

from typing import Callable

from sbcompile.frontends import (onnx_control, onnx_decompose, onnx_ops,  # noqa: F401
                                 onnx_quant, onnx_recurrent)
from sbcompile.frontends.onnx_lowering import NodeView
from sbcompile.frontends.onnx_registry import CONVERTERS


def converter_for(domain: str, op_type: str) -> Callable[[NodeView], None] | None:
    return CONVERTERS.get(("" if domain == "ai.onnx" else domain, op_type))
