"""The sbcompile IR: a typed, serialisable graph over a closed op set (see ``ops.OPS``)."""
from sbcompile.ir.graph import Graph, Node, Value
from sbcompile.ir.ops import OPS, OpSpec
from sbcompile.ir.validate import validate

__all__ = ["Graph", "Node", "Value", "OPS", "OpSpec", "validate"]
