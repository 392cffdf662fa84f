"""What an artifact must satisfy before anything reads it: a JSON Schema for every JSON member
(manifest, graphs, report, the Lava and Triton plans) and the consistency of each stored program
with the graph it was lowered from. A checksum only proves the bytes are the ones the manifest
lists; these checks make a forged artifact (checksums recomputed) fail here, with the member and
the place in it named, instead of deep inside a runner.
"""
from __future__ import annotations

import numpy as np
from jsonschema import Draft202012Validator

from sbcompile.config import CHOICES
from sbcompile.errors import ArtifactError
from sbcompile.ir.graph import DTYPES, Graph
from sbcompile.ir.ops import OPS, SAFETY_COUNT  # no stored count or bound exceeds the clamp


def _obj(required: dict, optional: dict | None = None, extra=True) -> dict:
    props = {**required, **(optional or {})}
    return {"type": "object", "required": list(required), "properties": props,
            "additionalProperties": extra}


def _array(items: dict, max_items: int | None = None) -> dict:
    schema = {"type": "array", "items": items}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


def _map(values: dict) -> dict:
    return {"type": "object", "additionalProperties": values}


RASTER_ENTRIES = 1 << 20  # the most entries a stored raster may hold
STR = {"type": "string"}
OPT_STR = {"type": ["string", "null"]}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
NAT = {"type": "integer", "minimum": 0}
POS = {"type": "integer", "minimum": 1}
NUM = {"type": "number"}
OPT_NUM = {"type": ["number", "null"]}
COUNT = {"type": "integer", "minimum": -SAFETY_COUNT, "maximum": SAFETY_COUNT}
DIM = {"anyOf": [NAT, STR]}
NAMES = _array(STR)

# the fields a load reads typed, none required (an artifact built in code may carry a partial
# config, read over the defaults); CompileConfig.from_json refuses unknown fields
CONFIG = _obj({}, {"preset": STR, "spike": BOOL, "k": NUM,
                   "max_count": {"type": ["integer", "null"]}, "percentile": NUM, "window": POS,
                   "group_size": {"type": ["integer", "null"]}, "exclude": NAMES,
                   "calib_batch": POS, "spike_conv": BOOL, "targets": NAMES,
                   "layers": _map({"type": "object"}),
                   **{name: {"enum": list(allowed)} for name, allowed in CHOICES.items()}})
EMPTY = {"type": "object", "maxProperties": 0}  # an artifact built in code without one
MANIFEST = _obj({"format_version": INT, "sbcompile_version": STR,
                 "config": CONFIG,
                 "members": _map({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
                 "manifest_sha256": STR})

# the domains of the attributes that size windows, loops and divisions: a forged zero stride or
# kernel must fail here, not inside a kernel
_POS_INTS = {"type": ["array", "null"], "items": POS}
NODE_ATTRS = _obj({}, {"strides": _POS_INTS, "dilations": _POS_INTS, "kernel": _POS_INTS,
                       "pads": {"type": ["array", "null"], "items": NAT}, "group": POS,
                       **{name: {"enum": list(allowed)}
                          for name, allowed in OPS["spike_encode"].choices.items()},
                       "k": {"type": "number", "exclusiveMinimum": 0},
                       "vth_min": {"type": "number", "exclusiveMinimum": 0},
                       "vth_max": {"type": "number", "exclusiveMinimum": 0},
                       "max_count": {"type": ["integer", "null"], "minimum": 1},
                       "safety_count": {"type": "integer", "minimum": 1, "maximum": SAFETY_COUNT},
                       "group_size": {"type": ["integer", "null"], "minimum": 1}})
NODE = _obj({"name": STR, "op": {"enum": sorted(OPS)}, "inputs": NAMES, "outputs": NAMES,
             "attrs": NODE_ATTRS}, extra=False)
GRAPH = _obj({"name": STR, "inputs": NAMES, "outputs": NAMES, "params": NAMES,
              "values": _array(_obj({"name": STR, "shape": _array(DIM),
                                     "dtype": {"enum": list(DTYPES)}}, extra=False)),
              "nodes": _array(NODE)}, {"meta": {"type": "object"}})

_SPARSITY = _obj({"count_zero": NUM, "spike_slot": NUM, "spike_slot_window3": NUM,
                  "mean_spikes_per_channel": NUM, "silent_channels": NUM,
                  # steps: an int, or under t_mode token the mean over tokens; at most the
                  # largest |count| (unary codings)
                  "T": {"type": ["number", "null"], "minimum": 0, "maximum": SAFETY_COUNT}})
_FIDELITY = _obj({"cosine": NUM, "snr_db": OPT_NUM})
_LAYER = _obj({"name": STR, "op": STR, "fan_in": {"type": ["integer", "null"]},
               "fan_out": {"type": ["integer", "null"]}})
_MEASURED_LAYER = _obj({
    "name": STR, "op": STR, "fan_in": INT, "fan_out": INT, "sparsity": _SPARSITY,
    "fidelity": _obj({"encode": _FIDELITY, "output": _FIDELITY}), "ops": _map(NUM),
    "count_histogram": _obj({"range": {"type": "integer", "minimum": 0, "maximum": 4096},
                             "counts": _array(NUM, 8195)}),
    "raster_first_sample": _array(COUNT, RASTER_ENTRIES)})
_ENERGY = _obj({"spiking_pJ": NUM, "dense_fp16_pJ": NUM, "dense_int8_pJ": NUM,
                "reduction_vs_fp16": NUM, "reduction_vs_int8": NUM, "convention": STR})
REPORT = {
    **_obj({"model": _obj({"name": STR, "parameters": NAT}), "config": CONFIG,
            "measured": BOOL, "layers": _array(_LAYER), "energy": _map(_ENERGY),
            "outputs_fidelity": _map(_obj({"cosine": NUM, "snr_db": OPT_NUM},
                                          {"argmax_agreement": NUM})),
            "totals": {"type": "object"}}, {"note": STR}),
    "if": {"properties": {"measured": {"const": True}}},
    "then": {"properties": {
        "layers": _array(_MEASURED_LAYER),
        "totals": _obj({"sparsity": _obj({"count_zero": NUM, "spike_slot": NUM,
                                          "spike_slot_window3": NUM, "window": POS,
                                          "mean_spikes_per_channel": NUM, "coding": STR})}),
        "energy": {"minProperties": 1}}},
}

LAVA_PLAN = _obj({
    "format": INT, "name": STR, "mode": STR, "inputs": NAMES, "outputs": NAMES,
    "values": _map({"type": "array", "prefixItems": [_array(DIM), {"enum": list(DTYPES)}],
                    "minItems": 2, "maxItems": 2}),
    "encoders": _array(_obj({"name": STR, "node": NODE, "x": STR, "counts": STR, "vth": STR,
                             "threshold": OPT_STR, "axis": OPT_STR,
                             "neurons": {"type": ["integer", "null"], "minimum": 0},
                             "message_bits": NAT, "count_bound": {"type": ["integer", "null"]},
                             "sum_bound": {"type": ["integer", "null"]}})),
    "synapses": _array(_obj({"name": STR, "layer": STR, "op": STR, "encoder": STR,
                             "counts": STR, "acc": STR, "weight": STR,
                             "attrs": {"type": "object"}, "in_shape": _array(POS),
                             "token_shape": _array(NAT), "rows": NAT, "cols": NAT,
                             "acc_rows": NAT, "fan_in_split": POS, "dense": BOOL})),
    "compute": _array(NODE), "mapping": {"type": "object"}})
TRITON_PLAN = _obj({
    "format": STR, "graph": STR,
    "encodes": _array(_obj({"node": STR, "channels": NAT, "event_max_rows": NAT, "unit": NAT})),
    "linears": _array(_obj({"node": STR, "weight": STR, "wt": STR, "scale": OPT_STR,
                            "bias": OPT_STR, "decode": STR, "group_size": {"type": ["integer",
                                                                                     "null"]},
                            "gemm": BOOL}))})

SCHEMAS = {"manifest.json": MANIFEST, "graph.json": GRAPH, "float_graph.json": GRAPH,
           "report.json": {"anyOf": [EMPTY, REPORT]}, "programs/lava/plan.json": LAVA_PLAN,
           "programs/triton/plan.json": TRITON_PLAN}
_VALIDATORS = {name: Draft202012Validator(s) for name, s in SCHEMAS.items()}


def check_member(label: str, member: str, doc) -> None:
    """Raise ArtifactError naming the member and the first place its JSON breaks its schema;
    members without a schema are binary (safetensors, checked by their parser)."""
    validator = _VALIDATORS.get(member)
    if validator is None:
        return
    error = next(iter(sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))),
                 None)
    if error is not None:
        raise ArtifactError(f"{label}: member '{member}' is malformed at {error.json_path}: "
                            f"{_short(error.message)}")


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_lava_program(label: str, graph: Graph, program) -> None:
    """The Lava program reads the graph's interface, its nodes and its parameters unchanged."""
    plan = program.plan
    where = f"{label}: the Lava program"
    _same_interface(where, graph, plan["inputs"], plan["outputs"])
    for name, (shape, dtype) in plan["values"].items():
        v = graph.values.get(name)
        if v is None or list(v.shape) != list(shape) or v.dtype != dtype:
            raise ArtifactError(f"{where} types value '{name}' as {dtype}{list(shape)}, the "
                                "graph does not")
    nodes = {n.name: n for n in graph.nodes}
    for node_json in [*(e["node"] for e in plan["encoders"]), *plan["compute"]]:
        node = nodes.get(node_json["name"])
        if node is None or node.to_json() != node_json:
            raise ArtifactError(f"{where} has node '{node_json['name']}', which differs from "
                                "the graph's")
    for layer in plan["synapses"]:
        node = nodes.get(layer["name"])
        attrs = {**OPS[node.op].attrs, **node.attrs} if node is not None else {}
        if node is None or node.op != layer["op"] or layer["weight"] not in node.inputs or \
                any(attrs.get(k, object()) != v for k, v in layer["attrs"].items()):
            raise ArtifactError(f"{where}: synapse layer '{layer['name']}' does not match the "
                                f"graph's {layer['op']} node reading '{layer['weight']}'")
    for name, arr in program.params().items():
        if name not in graph.params or not _equal(graph.params[name], arr):
            raise ArtifactError(f"{where}: parameter '{name}' differs from the graph's")


def check_triton_program(label: str, graph: Graph, program) -> None:
    """Each Triton step names a node of the matching op and stores that node's weight."""
    where = f"{label}: the Triton program"
    nodes = {n.name: n for n in graph.nodes}
    for name in program.encodes:
        if nodes[name].op != "spike_encode":
            raise ArtifactError(f"{where}: step '{name}' is not a spike_encode node")
    for name, step in program.linears.items():
        node = nodes[name]
        if node.op != "spike_linear" or step.weight not in node.inputs:
            raise ArtifactError(f"{where}: step '{name}' does not match a spike_linear node "
                                f"reading '{step.weight}'")
        wt = program.tensors.get(step.wt)
        weight = graph.params.get(step.weight)
        if wt is None or weight is None or not _equal(weight.T, wt):
            raise ArtifactError(f"{where}: weight '{step.wt}' is not the transpose of the "
                                f"graph's '{step.weight}'")


def _same_interface(where: str, graph: Graph, inputs, outputs) -> None:
    if list(inputs) != list(graph.inputs) or list(outputs) != list(graph.outputs):
        raise ArtifactError(f"{where} has inputs {list(inputs)} and outputs {list(outputs)}, "
                            f"the graph {graph.inputs} and {graph.outputs}")


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
