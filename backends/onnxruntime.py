"""onnxruntime backend: lower the spiking IR to its onnx-qdq export, with every integer count and
accumulator as an extra output, for the onnxruntime target (runtime/onnxruntime_target.py)."""
from __future__ import annotations

from sbcompile.backends.export_onnx_qdq import to_onnx
from sbcompile.errors import SbcError, UnsupportedError
from sbcompile.ir.graph import Graph
from sbcompile.runtime.onnxruntime_target import OnnxruntimeProgram
from sbcompile.runtime.targets import integer_values


def lower(graph: Graph, config=None) -> OnnxruntimeProgram:
    try:
        model = to_onnx(graph, integer_values(graph))
    except UnsupportedError as e:
        raise SbcError(f"the onnxruntime target runs the onnx-qdq export: {e}") from None
    return OnnxruntimeProgram(graph, model.SerializeToString())
