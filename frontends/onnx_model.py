"""Reading and preparing an ONNX model before lowering: parse, opset check (older opsets upgraded
by onnx's version converter), structure checks (dangling inputs, cycles), dynamic dims written as
-1 (Paddle2ONNX), user input shapes, shape inference and the value type table.

Every failure is an SbcError naming the file, node or value at fault.
"""
from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import onnx.version_converter
from google.protobuf.message import DecodeError

from sbcompile.errors import SbcError, UnsupportedError
from sbcompile.ir.graph import DTYPES, Value, unique_name

CUSTOM_DOMAIN = "ai.sbcompile"
FUSED_DOMAIN = "ai.sbcompile.fused"  # ops the frontend rewrites build; never read from a model
MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()
UPGRADE_OPSET = 17  # older models are converted to this opset (onnx.version_converter)


def read_model(model: str | Path | bytes | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The parsed model (a private copy) and a label naming it in error messages."""
    if isinstance(model, onnx.ModelProto):
        proto, label = onnx.ModelProto(), "the model"
        proto.CopyFrom(model)
    elif isinstance(model, (bytes, bytearray)):
        label = "the model bytes"
        proto = _parse(lambda: onnx.load_from_string(bytes(model)), label)
    elif isinstance(model, (str, Path)):
        label = str(model)
        if not Path(model).is_file():
            raise SbcError(f"{label}: no such file")
        proto = _parse(lambda: onnx.load(str(model)), label)
    else:
        raise SbcError(f"expected an ONNX file, bytes or ModelProto, got {type(model).__name__}")
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.opset_import:
        raise SbcError(f"{label}: not an ONNX model (no IR version, graph or opset import)")
    try:
        check_model_file(proto, label)
    except UnicodeDecodeError:  # protobuf decodes string fields when they are first read
        raise SbcError(f"{label}: not a valid ONNX model (a name or string is not UTF-8)") from None
    return proto, label


def _parse(load, label: str) -> onnx.ModelProto:
    """onnx's reader; its refusals (bad bytes, external data that is missing or outside the
    model's folder, a symlink or device file) become one SbcError naming the file."""
    try:
        return load()
    except (DecodeError, ValueError, RuntimeError, OSError, onnx.checker.ValidationError) as e:
        raise SbcError(f"{label}: not a valid ONNX model ({str(e).splitlines()[0] or 'truncated'})"
                       ) from None


MAX_ELEMENTS = 2 ** 31 - 1  # a tensor past this cannot be indexed by int32 kernels


def check_model_file(proto: onnx.ModelProto, label: str) -> None:
    """What onnxruntime refuses too: an IR version newer than onnx knows, initializers whose data
    disagrees with their declared shape, inputs past MAX_ELEMENTS. (Duplicate node names, which
    onnxruntime runs, are made unique by ``check_structure``.)"""
    if proto.ir_version > onnx.IR_VERSION:
        raise UnsupportedError(f"{label}: IR version {proto.ir_version} is newer than the "
                               f"newest onnx knows ({onnx.IR_VERSION})")
    for node in proto.graph.node:
        _ = (node.op_type, node.domain, list(node.input), list(node.output),
             [(a.name, a.s, list(a.strings)) for a in node.attribute])  # decodes every string
    for tensor in proto.graph.initializer:
        if any(d < 0 for d in tensor.dims) or math.prod(tensor.dims) > MAX_ELEMENTS:
            raise SbcError(f"{label}: initializer '{tensor.name}' declares shape "
                           f"{list(tensor.dims)}")
        try:
            onnx.numpy_helper.to_array(tensor)
        except (ValueError, TypeError, onnx.checker.ValidationError) as e:
            raise SbcError(f"{label}: initializer '{tensor.name}' has data that does not match "
                           f"its shape {list(tensor.dims)} ({str(e).splitlines()[0]})") from None
    for info in proto.graph.input:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim if d.HasField("dim_value")]
        if math.prod(dims) > MAX_ELEMENTS:
            raise SbcError(f"{label}: input '{info.name}' has {math.prod(dims):,} elements, more "
                           f"than {MAX_ELEMENTS:,}")


def upgrade_opset(proto: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """A model whose default opset is older than MIN_OPSET, converted to UPGRADE_OPSET by onnx's
    version converter (real exported files are often opset 11 or 12); others unchanged."""
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version >= MIN_OPSET:
        return proto
    try:
        return onnx.version_converter.convert_version(proto, UPGRADE_OPSET)
    except Exception as e:  # the converter raises bare RuntimeErrors and ValueErrors
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"{label}: opset {version} could not be upgraded to opset "
                               f"{UPGRADE_OPSET} by onnx.version_converter ({why})") from None


def mark_dynamic_dims(proto: onnx.ModelProto) -> None:
    """Dims written as a negative size (Paddle2ONNX writes dynamic dims as -1) become symbolic,
    named after their value and axis, so no later step reads -1 as a size (in place)."""
    g = proto.graph
    for info in [*g.input, *g.output, *g.value_info]:
        if not info.type.HasField("tensor_type"):
            continue
        for axis, dim in enumerate(info.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value < 0:
                dim.dim_param = f"{info.name}_dim{axis}"


def check_opsets(proto: onnx.ModelProto, label: str) -> dict[str, int]:
    """Opset versions by domain (the default domain as ""); unsupported versions are refused."""
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    if "" not in opsets:
        raise UnsupportedError(f"{label}: imports no default ONNX opset")
    if not MIN_OPSET <= opsets[""] <= MAX_OPSET:
        raise UnsupportedError(f"{label}: opset {opsets['']} is not supported (sbcompile reads "
                               f"opsets {MIN_OPSET}..{MAX_OPSET}; onnx.version_converter can "
                               "upgrade an older model)")
    if FUSED_DOMAIN in opsets:
        raise UnsupportedError(f"{label}: domain {FUSED_DOMAIN} is internal to sbcompile")
    if CUSTOM_DOMAIN in opsets and opsets[CUSTOM_DOMAIN] != 1:
        raise UnsupportedError(f"{label}: domain {CUSTOM_DOMAIN} version "
                               f"{opsets[CUSTOM_DOMAIN]} is not supported (only 1)")
    return opsets


def check_structure(proto: onnx.ModelProto, label: str) -> dict[str, str]:
    """Name unnamed nodes and make duplicate names unique (some exporters repeat one name),
    refuse dangling inputs, unproduced outputs and cycles, and sort the nodes topologically (in
    place). Returns {new name: the file's name} for every node renamed (messages show both)."""
    graph = proto.graph
    taken = {n.name for n in graph.node if n.name}
    seen: set[str] = set()
    renamed: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            new = unique_name(f"{node.name or node.op_type}_{i}", taken)
            renamed[new] = node.name
            node.name = new
        seen.add(node.name)
    available = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    available |= {t.values.name for t in graph.sparse_initializer}
    producer = {o: n.name for n in graph.node for o in n.output if o}
    for node in graph.node:
        for name in node.input:
            if name and name not in available and name not in producer:
                raise SbcError(f"{label}: node '{node.name}' ({node.op_type}) reads '{name}', "
                               "which is no graph input, initializer or node output (a missing "
                               "initializer?)")
    for out in graph.output:
        if out.name not in available and out.name not in producer:
            raise SbcError(f"{label}: graph output '{out.name}' is never produced")
    dag = nx.DiGraph()
    order = {n.name: i for i, n in enumerate(graph.node)}
    dag.add_nodes_from(order)
    dag.add_edges_from((producer[i], n.name) for n in graph.node for i in n.input if i in producer)
    try:
        ranked = list(nx.lexicographical_topological_sort(dag, key=order.__getitem__))
    except nx.NetworkXUnfeasible:
        culprit = nx.find_cycle(dag)[0][0]
        raise SbcError(f"{label}: the graph has a cycle through node '{culprit}'") from None
    nodes = {n.name: n for n in graph.node}
    sorted_nodes = [onnx.NodeProto() for _ in ranked]
    for dst, name in zip(sorted_nodes, ranked):
        dst.CopyFrom(nodes[name])
    del graph.node[:]
    graph.node.extend(sorted_nodes)
    return renamed


def parameter_count(proto: onnx.ModelProto) -> int:
    """Elements the file stores as weights, each initializer (or Constant node tensor) counted
    once however many nodes read it."""
    count = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    count += sum(int(np.prod(s.dims)) for s in proto.graph.sparse_initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            count += sum(int(np.prod(a.t.dims)) for a in node.attribute if a.name == "value")
    return count


def runtime_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old models list initializers as inputs too)."""
    init = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in init]


def apply_input_shapes(proto: onnx.ModelProto, input_shapes: dict | None, label: str) -> None:
    """Pin input dims from ``input_shapes`` (ints, or strings for symbolic dims); a rank or static
    dim that contradicts the model is an error naming the input."""
    inputs = {v.name: v for v in runtime_inputs(proto)}
    for name, shape in (input_shapes or {}).items():
        if name not in inputs:
            raise SbcError(f"input_shapes names '{name}', which is not an input of {label} "
                           f"(its inputs: {', '.join(inputs)})")
        shape = list(shape)
        tensor = inputs[name].type.tensor_type
        declared = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in tensor.shape.dim]
        if tensor.HasField("shape") and (len(declared) != len(shape) or any(
                isinstance(d, int) and d != s for d, s in zip(declared, shape))):
            raise SbcError(f"input '{name}': shape {shape} contradicts the model's {declared}")
        del tensor.shape.dim[:]
        for s in shape:
            dim = tensor.shape.dim.add()
            if isinstance(s, (int, np.integer)):
                dim.dim_value = int(s)
            else:
                dim.dim_param = str(s)


def fix_input_values(proto: onnx.ModelProto, values: dict[str, np.ndarray],
                     label: str) -> dict[str, dict]:
    """Turn each input of ``values`` into an initializer of that value (in place), so what
    depends on it folds; returns the guards a run checks: {input: {"value": list, "dtype"}}."""
    inputs = {v.name: v for v in runtime_inputs(proto)}
    guards = {}
    for name, value in values.items():
        if name not in inputs:
            raise SbcError(f"input_values names '{name}', which is not an input of {label}")
        info = inputs[name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
        array = np.asarray(value).astype(dtype)
        proto.graph.input.remove(info)
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, name))
        guards[name] = {"value": array.tolist(), "dtype": array.dtype.name}
    return guards


def infer_shapes(proto: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """onnx shape inference in strict mode with data propagation; our custom GLA op's outputs are
    typed here (onnx has no schema for it): y has v's shape and q's dtype. A declared graph
    output shape that contradicts inference (exporters write stale ones) gives way to it."""
    for _ in range(1 + sum(n.domain == CUSTOM_DOMAIN for n in proto.graph.node)):
        try:
            proto = _strict_inference(proto)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            try:
                proto = _strict_inference(_without_output_shapes(proto))
            except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
                raise SbcError(f"{label}: shape inference failed: "
                               f"{str(e).strip().splitlines()[-1]}") from None
        if not _type_custom_outputs(proto):
            break
    return proto


def _strict_inference(proto: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True,
                                             data_prop=True)


def _without_output_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    for out in bare.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    return bare


def inference_model(proto: onnx.ModelProto, nodes: list[onnx.NodeProto],
                    consts: dict[str, np.ndarray], small: int = 4096) -> onnx.ModelProto:
    """A light copy of the model for shape inference: ``nodes`` and the constants they read,
    small ones as initializers (inference sees their data, e.g. computed shapes), large ones as
    typed graph inputs (their shape is all inference needs). Weights are never copied, so this
    stays small (and under protobuf's 2 GB limit) for large models."""
    reduced = onnx.ModelProto()
    reduced.ir_version = max(proto.ir_version, 4)  # initializers need not be inputs from 4 on
    reduced.opset_import.extend(proto.opset_import)
    reduced.functions.extend(proto.functions)
    graph = reduced.graph
    graph.name = proto.graph.name
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    graph.node.extend(nodes)
    inputs = {v.name for v in graph.input}
    read = {i for n in nodes for i in names_read(n)} | {o.name for o in graph.output}
    for name in sorted(read & set(consts)):
        arr = consts[name]
        if arr.size <= small:
            graph.initializer.append(onnx.numpy_helper.from_array(arr, name))
        elif name not in inputs:
            graph.input.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
    return reduced


def names_read(node: onnx.NodeProto) -> set[str]:
    """The values a node reads, including those its subgraphs (If, Loop, Scan) read from the
    enclosing scope."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else
                    list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []):
            for inner in sub.node:
                names |= names_read(inner)
    return names


def _type_custom_outputs(proto: onnx.ModelProto) -> bool:
    g = proto.graph
    known = {v.name: v for v in [*g.input, *g.output, *g.value_info]}  # inferred types win
    added = False
    for node in proto.graph.node:
        if (node.domain == CUSTOM_DOMAIN and node.op_type == "GatedLinearAttention"
                and len(node.input) == 4 and node.input[2] in known
                and not known.get(node.output[0], onnx.ValueInfoProto()
                                  ).type.tensor_type.HasField("shape")):
            info = onnx.ValueInfoProto()
            info.CopyFrom(known[node.input[2]])
            info.name = node.output[0]
            proto.graph.value_info.append(info)
            added = True
    return added


def _all_value_infos(proto: onnx.ModelProto):
    g = proto.graph
    return [*g.input, *g.value_info, *g.output]


def value_types(proto: onnx.ModelProto) -> dict[str, Value | str]:
    """Every typed value: a Value, or a string saying why it cannot be one (an unsupported dtype
    or an unknown rank). Unknown dims become their dim_param or "?"."""
    types: dict[str, Value | str] = {}
    for info in _all_value_infos(proto):
        if info.name in types and isinstance(types[info.name], Value):
            continue
        types[info.name] = _value_of(info)
    return types


def _value_of(info: onnx.ValueInfoProto) -> Value | str:
    if not info.type.HasField("tensor_type"):
        return f"value '{info.name}' is not a tensor"
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return f"value '{info.name}' has an unknown rank"
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tensor.shape.dim]
    return _value_type(info.name, tensor.elem_type, dims)


def _value_type(name: str, elem_type: int, dims: list) -> Value | str:
    if elem_type == onnx.TensorProto.UNDEFINED:
        return f"value '{name}' has an unknown dtype"
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    if dtype not in DTYPES:
        return f"value '{name}' has dtype {onnx.TensorProto.DataType.Name(elem_type).lower()}, "\
               "which sbcompile does not support"
    return Value(name, tuple(dims), dtype)
