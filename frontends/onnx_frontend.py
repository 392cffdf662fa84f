"""The ONNX frontend: an ONNX model (opset 13 and newer; older ones upgraded) -> a validated IR
Graph.

Steps: parse, check opsets and structure, pin user input shapes, infer shapes (onnx, strict), fold
constants and inline control flow of static structure (``onnx_control``), rewrite common
spellings into single ops (``onnx_rewrites``), lower every node to IR ops (``onnx_ops``), drop
dead code and validate. ``support_table`` reports, per ONNX node, whether it is supported and
which IR ops it became.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from sbcompile.errors import DynamicDimError, SbcError, UnsupportedError
from sbcompile.frontends import onnx_model
from sbcompile.frontends.onnx_control import expand_control_flow
from sbcompile.frontends.onnx_fold import fold_constants, initializers
from sbcompile.frontends.onnx_lowering import Lowering, NodeView
from sbcompile.frontends.onnx_converters import converter_for
from sbcompile.frontends.onnx_quant import expand_quantized
from sbcompile.frontends.onnx_rewrites import rewrite
from sbcompile.ir.graph import Graph
from sbcompile.ir.validate import validate

ModelSource = str | Path | bytes | onnx.ModelProto


@dataclass
class _Result:
    graph: Graph
    rows: list[dict] = field(default_factory=list)

    @property
    def unsupported(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "unsupported"]

    @property
    def needs_static(self) -> list[dict]:
        """Rows supported once their symbolic dims are pinned (from calibration data), or once
        the nodes they read from are."""
        return [r for r in self.rows if "needs_static" in r]


def load_onnx(model: ModelSource, input_shapes: dict | None = None,
              input_values: dict | None = None) -> Graph:
    """The model as a validated IR graph. Raises SbcError (UnsupportedError for what sbcompile
    does not support) naming the file, node or value at fault. ``input_values`` fixes inputs
    given once (a sample rate) to a value: they fold as constants, and a run with another value
    is refused naming the input (``graph.meta['input_guards']``)."""
    result = _lower(model, input_shapes, input_values)
    pin = result.needs_static
    if pin:  # before the unsupported: those may be nodes reading what pinning lowers
        raise DynamicDimError(f"node '{pin[0]['name']}'{_file_name(pin[0])} "
                              f"({pin[0]['op_type']}): {pin[0]['reason']}",
                              tuple(dict.fromkeys(d for r in pin for d in r["needs_static"])))
    bad = result.unsupported
    if bad:
        more = f" (and {len(bad) - 1} more unsupported nodes)" if len(bad) > 1 else ""
        raise UnsupportedError(f"node '{bad[0]['name']}'{_file_name(bad[0])} "
                               f"({bad[0]['op_type']}): {bad[0]['reason']}{more}")
    return _finished(result.graph)


def _file_name(row: dict) -> str:
    """For a node renamed on import (a duplicate name), the name the file gives it."""
    return f" (named '{row['onnx_name']}' in the file)" if "onnx_name" in row else ""


def support_table(model: ModelSource, input_shapes: dict | None = None) -> list[dict]:
    """One row per ONNX node: name, op_type, status ("supported"/"unsupported"), ir_ops (the IR
    ops it became), reason."""
    return _lower(model, input_shapes).rows


def inspect_onnx(model: ModelSource, input_shapes: dict | None = None) -> dict:
    """What ``sbcompile inspect`` shows, whatever the model holds: ``rows`` (as support_table),
    ``parameters`` (each initializer counted once), ``inputs``/``outputs`` ({name: (shape,
    dtype)}), ``ir_ops`` (IR op counts of the lowered graph; only when every node lowers)."""
    proto, _ = onnx_model.read_model(model)
    result = _lower(proto, input_shapes)
    graph = result.graph

    def typed(names):
        return {n: (list(graph.values[n].shape), graph.values[n].dtype) for n in names
                if n in graph.values}

    info = {"name": graph.name, "rows": result.rows,
            "parameters": onnx_model.parameter_count(proto),
            "inputs": typed(graph.inputs), "outputs": typed(graph.outputs), "ir_ops": None}
    if not result.unsupported:
        graph.remove_unused()
        info["ir_ops"] = dict(sorted(Counter(n.op for n in graph.nodes).items()))
    return info


def lower_with_support(model: ModelSource,
                       input_shapes: dict | None = None) -> tuple[list[dict], Graph | None]:
    """The support table and, when every node is supported, the validated IR graph, from one
    lowering of the model."""
    result = _lower(model, input_shapes)
    incomplete = result.unsupported or result.needs_static
    return result.rows, None if incomplete else _finished(result.graph)


def _finished(graph: Graph) -> Graph:
    graph.remove_unused()
    validate(graph)
    return graph


def _lower(model: ModelSource, input_shapes: dict | None,
           input_values: dict | None = None) -> _Result:
    proto, label = onnx_model.read_model(model)
    proto = onnx_model.upgrade_opset(proto, label)
    opsets = onnx_model.check_opsets(proto, label)
    onnx_model.mark_dynamic_dims(proto)
    renamed = onnx_model.check_structure(proto, label)
    onnx_model.apply_input_shapes(proto, input_shapes, label)
    guards = onnx_model.fix_input_values(proto, input_values or {}, label)
    consts = initializers(proto, label)
    expand_quantized(proto, consts)  # QOperator / com.microsoft forms as standard ops
    types = _inferred_types(proto, list(proto.graph.node), consts, label)
    nodes, folded = fold_constants(proto, consts, types, opsets)
    select = False  # run-time Ifs become selects once nothing static is left to inline
    while True:  # If / Loop / Scan of static structure, until nothing more inlines
        before = list(proto.graph.node)
        if not expand_control_flow(proto, consts, types, select):
            if select:
                break
            select = True
            continue
        try:
            types.update(_inferred_types(proto, list(proto.graph.node), consts, label))
        except SbcError:  # the inlined body does not type-check outside its node: keep it
            del proto.graph.node[:]
            proto.graph.node.extend(before)
            break
        nodes, more = fold_constants(proto, consts, types, opsets)
        folded.update(more)
    if folded:  # infer again: computed shapes are known now
        types.update(_inferred_types(proto, nodes, consts, label))

    nodes, sources = rewrite(proto, nodes, consts, types)

    lw = Lowering(proto.graph.name or "model", consts, types, _use_counts(proto, nodes), sources)
    for info in onnx_model.runtime_inputs(proto):
        lw.graph.inputs.append(info.name)
        _typed(lw, info.name, f"graph input '{info.name}'")
    reasons: dict[str, str] = {}
    pins: dict[str, tuple] = {}
    waiting: set[str] = set()  # values of nodes that static dims would lower
    for node in nodes:
        reason, dims = _lower_node(lw, node)
        pinnable = dims is not None or (reason and waiting.intersection(node.input))
        if pinnable:
            waiting.update(node.output)
        for source in sources.get(node.name, [node.name]):
            reasons[source] = reason
            if pinnable:
                pins[source] = dims or ()
    lw.graph.outputs = [o.name for o in proto.graph.output]
    if guards:
        lw.graph.meta["input_guards"] = guards
    for name in lw.graph.outputs:
        try:
            _typed(lw, name, f"graph output '{name}'")
        except UnsupportedError:
            if not any(reasons.values()):  # else an unsupported node upstream says why
                raise
    return _Result(lw.graph, _rows(proto, lw.graph, lw.origins, {**folded, **reasons}, folded,
                                   renamed, pins))


def _inferred_types(proto: onnx.ModelProto, nodes: list[onnx.NodeProto],
                    consts: dict, label: str) -> dict:
    light = onnx_model.inference_model(proto, nodes, consts)
    return onnx_model.value_types(onnx_model.infer_shapes(light, label))


def _use_counts(proto: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> dict[str, int]:
    """Readers of each value among the nodes left to lower, graph outputs counted."""
    uses: dict[str, int] = {}
    for name in [*(i for n in nodes for i in n.input), *(o.name for o in proto.graph.output)]:
        uses[name] = uses.get(name, 0) + 1
    return uses


def _typed(lw: Lowering, name: str, what: str) -> None:
    try:
        lw.value(name)
    except UnsupportedError as e:
        raise UnsupportedError(f"{what}: {e}") from None


def _lower_node(lw: Lowering, node: onnx.NodeProto) -> tuple[str, tuple | None]:
    """Lower one node; returns ("", None) or the reason it is unsupported and, when pinning
    input dims would make it supported, the symbolic dims in the way (None otherwise)."""
    convert = converter_for(node.domain, node.op_type)
    if convert is None:
        domain = f" in domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
        if node.domain == "ai.onnx.ml":
            domain += " (classical machine learning: sbcompile compiles neural networks)"
        return f"op type {node.op_type}{domain} is not supported", None
    try:
        convert(NodeView(lw, node))
    except UnsupportedError as e:
        prefix = f"node '{node.name}' ({node.op_type}): "
        reason = str(e)[len(prefix):] if str(e).startswith(prefix) else str(e)
        return reason, getattr(e, "dims", None)
    except ValueError as e:  # operands the model's data makes inconsistent (a bias of size 0)
        return f"inconsistent operands ({str(e).splitlines()[0]})", None
    return "", None


def _rows(proto: onnx.ModelProto, graph: Graph, origins: dict[str, list[str]],
          reasons: dict[str, str], folded: dict[str, str], renamed: dict[str, str],
          pins: dict[str, tuple]) -> list[dict]:
    op_of = {n.name: n.op for n in graph.nodes}
    ir_ops: dict[str, set[str]] = {}
    for ir_name, sources in origins.items():
        for src in sources:
            ir_ops.setdefault(src, set()).add(op_of[ir_name])
    rows = []
    for node in proto.graph.node:
        reason = reasons.get(node.name, "")
        ops = sorted(ir_ops.get(node.name, ()))
        status = "unsupported" if reason and (node.name not in folded and node.name not in pins) \
            else "supported"
        if status == "supported" and not reason and not ops:
            reason = "needs no IR op (no effect on the outputs)"
        rows.append({"name": node.name, "op_type": node.op_type, "status": status,
                     "ir_ops": ops, "reason": reason,
                     **({"onnx_name": renamed[node.name]} if renamed.get(node.name) else {}),
                     **({"needs_static": list(pins[node.name])} if node.name in pins else {})})
    return rows
