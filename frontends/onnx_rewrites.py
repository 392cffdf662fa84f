"""Frontend rewrites: the many ONNX spellings of one layer become one op, before lowering.

The rules are onnxscript rewriter rules, run on the folded ONNX graph in onnx_ir form: onnxscript's
own where they fit (BatchNorm folding into Conv/Gemm, the scaled-dot-product-attention pattern,
no-op Cast; onnx_ir's identity elimination) and ours, written the same way, for the rest
(``rewrite_noops``, ``rewrite_activations``, ``rewrite_norms``, ``rewrite_attention``,
``rewrite_linear``). A match's intermediate values must have no other consumer (onnxscript
checks it), so a rewrite never changes what any other node sees. Fused results are standard ONNX
ops (Gelu, LayerNormalization, RMSNormalization, Conv, Gemm) or ops of the private domain
``FUSED_DOMAIN`` (Linear, Silu, Attention with causal/window and GQA) that ``onnx_ops`` lowers
one to one.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import IdentityEliminationPass
from onnxscript.rewriter import pattern
from onnxscript.rewriter.rules import common as stock

from sbcompile.frontends import rewrite_activations, rewrite_attention, rewrite_linear, \
    rewrite_noops, rewrite_norms
from sbcompile.frontends.rewrite_base import SOURCES_KEY
from sbcompile.ir.graph import Value

# One pass of the rule set visits every node once; a rewrite can enable another (a fused
# attention then reads un-repeated kv heads), so passes repeat until nothing changes.
MAX_PASSES = 8

# The order matters where two rules share an anchor: LayerNorm before RMSNorm (the tail of a
# LayerNorm is an RMSNorm of x - mean). The rules list the operand orders they accept themselves
# (commuting every Add and Mul of every pattern would try a hundred times as many), with
# constants last: ``_constants_last`` puts them there first.
RULES = pattern.RewriteRuleSet([
    stock.no_op_cast_rule, *rewrite_noops.RULES, *rewrite_activations.RULES, *rewrite_norms.RULES,
    *rewrite_attention.RULES, *rewrite_linear.RULES])
COMMUTATIVE = ("Add", "Mul")


def rewrite(proto: onnx.ModelProto, nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
            types: dict[str, Value | str]) -> tuple[list[onnx.NodeProto], dict[str, list[str]]]:
    """Apply the rules to ``nodes`` (the graph left after folding). Returns the new node list and,
    for each fused node, the ONNX nodes it replaced. New constants go into ``consts`` and the
    types of new values into ``types`` (both in place)."""
    model, tensors = _ir_model(proto, nodes, consts, types)
    _constants_last(model.graph)
    for _ in range(MAX_PASSES):
        if not RULES.apply_to_model(model):
            break
    if not any(a.type == ir.AttributeType.GRAPH for n in model.graph for a in n.attributes.values()):
        IdentityEliminationPass()(model)  # (it fails inside the branches of a run-time If,
        # which lowering refuses with its reason)
    for value in model.graph.initializers.values():
        if value.const_value is not tensors.get(value.name):
            consts[value.name] = value.const_value.numpy()
    sources = {}
    for node in model.graph:
        if SOURCES_KEY in node.metadata_props:
            sources[node.name] = json.loads(node.metadata_props[SOURCES_KEY])
        for out in node.outputs:
            if out.name not in types and out.dtype is not None and out.shape is not None:
                types[out.name] = Value(out.name, tuple(
                    d if isinstance(d, int) else str(d) for d in out.shape), out.dtype.numpy().name)
    return [ir.serde.serialize_node(n) for n in model.graph], sources


def _constants_last(graph: ir.Graph) -> None:
    """Swap the operands of Add and Mul nodes whose first operand alone is a constant."""
    for node in graph:
        if node.domain == "" and node.op_type in COMMUTATIVE and len(node.inputs) == 2:
            a, b = node.inputs
            if a is not None and b is not None and a.const_value is not None \
                    and b.const_value is None:
                node.replace_input_with(0, b)
                node.replace_input_with(1, a)


def _ir_model(proto: onnx.ModelProto, nodes: list[onnx.NodeProto], consts: dict[str, np.ndarray],
              types: dict[str, Value | str]) -> tuple[ir.Model, dict[str, ir.Tensor]]:
    """The graph of ``nodes`` as an onnx_ir model: typed values, the constants it reads as
    initializers wrapping the arrays (no copy). Also returns those tensors by name."""
    light = onnx.ModelProto()
    light.ir_version = max(proto.ir_version, 4)
    light.opset_import.extend(proto.opset_import)
    graph = light.graph
    graph.name = proto.graph.name
    graph.node.extend(nodes)
    inputs = {v.name for v in proto.graph.input if v.name not in consts}
    graph.input.extend(v for v in proto.graph.input if v.name in inputs)
    read = [i for n in nodes for i in n.input if i in consts]
    for name in dict.fromkeys(read):
        arr = consts[name]
        graph.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
    graph.output.extend(proto.graph.output)
    produced = {o for n in nodes for o in n.output if o}
    for name in produced:
        t = types.get(name)
        if isinstance(t, Value):
            graph.value_info.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), list(t.shape)))
    model = ir.from_proto(light)
    tensors = {}
    for value in list(model.graph.inputs):
        if value.name in consts:
            model.graph.inputs.remove(value)
            tensors[value.name] = value.const_value = ir.Tensor(consts[value.name])
            model.graph.register_initializer(value)
    return model, tensors
