"""Loihi 2 mapping under per-core limits, lowering errors, and the program's serialised form."""
import json

import numpy as np
import pytest

from sbcompile.artifact import Artifact
from sbcompile.backends.lava import lower
from sbcompile.config import CompileConfig
from sbcompile.errors import ArtifactError, SbcError
from sbcompile.ir.graph import Graph, Node, Value
from sbcompile.runtime.lava import mapping
from sbcompile.runtime.lava.connectivity import layer_geometry
from sbcompile.runtime.reference_float import conv_nd
from sbcompile.runtime.lava.program import PLAN_MEMBER, LavaProgram
from sbcompile.runtime.lava.shapes import infer_shapes
from sbcompile.runtime.lava.topology import build_topology


def spiked_linear_graph(k=16, n=8, max_count=None, policy="dynamic", seed=0) -> Graph:
    """x [batch, k] -> spike_encode -> spike_linear -> spike_decode -> relu -> y."""
    rng = np.random.default_rng(seed)
    g = Graph("lin", ["x"], ["y"], {"x": Value("x", ("batch", k), "float32")}, [])
    w = g.add_param("w", rng.integers(-127, 128, size=(n, k)).astype(np.int8))
    scale = g.add_param("scale", np.full((1, n), 0.01, np.float32))
    enc_in = ["x"]
    if policy == "static":
        enc_in.append(g.add_param("vth", np.float32(0.1)))
    for name, shape, dtype in [("c", ("batch", k), "int32"), ("v", ("batch", 1), "float32"),
                               ("acc", ("batch", 1, n), "int32"), ("d", ("batch", n), "float32"),
                               ("y", ("batch", n), "float32")]:
        g.add_value(name, shape, dtype)
    if policy == "static":
        g.values["v"] = Value("v", (), "float32")
    g.nodes = [Node("enc", "spike_encode", enc_in, ["c", "v"],
                    {"policy": policy, "max_count": max_count}),
               Node("lin", "spike_linear", ["c", w], ["acc"]),
               Node("dec", "spike_decode", ["acc", "v", scale], ["d"]),
               Node("act", "relu", ["d"], ["y"])]
    return g


def test_limits_cite_their_sources():
    for name, limit in mapping.LOIHI2.items():
        assert limit.value > 0 and len(limit.source) > 20, name


def test_small_layer_maps_to_one_core_each():
    program = lower(spiked_linear_graph(), mode="graded")
    m = program.plan["mapping"]
    assert m["layers"]["lin"] == {"accumulator_neurons": 8, "synapses": 128, "fan_in": 16,
                                  "fan_in_split": 1, "cores": 1, "synapse_memory_bytes": 128,
                                  "shared_weight_bytes": 128}
    assert m["encoders"]["enc"]["cores"] == 1
    assert m["neuro_cores"] == 2 and m["chips"] == 1
    assert m["embedded_processes"] == ["dec", "act"]
    # dynamic threshold: |count| <= k * K + 1 -> 49 fits 7 bits, plus the sign
    assert m["encoders"]["enc"]["message_bits"] == 7


def _linear(n, k, group_size=None):
    return layer_geometry("spike_linear", (n, k), {"group_size": group_size}, ())


def test_wide_fan_in_is_split_so_partial_sums_fit_the_neuron_state():
    # static counts up to 127, int8 weights up to 127, 2048 inputs: 33M worst case > 2^23
    parts = mapping.fan_in_split(_linear(4, 2048), 127, count_bound=127, sum_bound=None,
                                 name="wide")
    width = -(-2048 // parts)
    assert parts > 1
    assert 127 * 127 * width <= mapping.STATE_MAX < 127 * 127 * -(-2048 // (parts - 1))
    entry = mapping.layer_mapping(_linear(4, 2048), parts)
    assert entry["accumulator_neurons"] == 4 * parts and entry["fan_in"] == width


def test_fan_in_beyond_one_core_is_split_and_packed():
    geometry = _linear(10, 10000)
    parts = mapping.fan_in_split(geometry, 1, count_bound=1, sum_bound=None, name="long")
    assert parts == 3  # 10000 inputs over cores of 4096 input axons
    entry = mapping.layer_mapping(geometry, parts)
    assert entry["cores"] >= 3 and entry["fan_in"] <= mapping.LOIHI2["fan_in_per_core"].value


def test_dense_layer_core_count_follows_synaptic_memory():
    per_core = min(8192, 937_500 // 1000)
    assert mapping.pack_cores(_linear(10000, 1000), 1) == -(-10000 // per_core)


def _tile_inputs(in_shape, kernel, pads, line, columns):
    """Distinct input neurons read by the output positions (line, columns) of a stride-1 2-D
    convolution, every input channel: enumerated tap by tap."""
    seen = set()
    for col in columns:
        for ky in range(kernel[0]):
            for kx in range(kernel[1]):
                y, x = line - pads[0] + ky, col - pads[1] + kx
                if 0 <= y < in_shape[1] and 0 <= x < in_shape[2]:
                    seen.add((y, x))
    return in_shape[0] * len(seen)


def test_conv_layer_packing_respects_every_limit():
    """Every core's tile, expanded, fits each limit: the geometric packing never overfills."""
    weight_shape = (16, 32, 3, 3)
    attrs = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    geo = layer_geometry("spike_conv", weight_shape, attrs, (32, 48, 48))
    cores = mapping.pack_cores(geo, 1)
    assert cores > 1
    # the synapses and neurons of the layer fit the cores it was given
    lim = {k: mapping.LOIHI2[k].value for k in ("neurons_per_core", "synapses_per_core",
                                                 "fan_in_per_core")}
    assert geo.rows <= cores * lim["neurons_per_core"]
    assert geo.synapses() <= cores * lim["synapses_per_core"]
    # a whole output line reads more inputs than one core takes; half a line (all 16 channels,
    # 24 positions x 288 synapses) fits every limit: 2 cores per output line
    assert _tile_inputs((32, 48, 48), (3, 3), (1, 1), 5, range(48)) > lim["fan_in_per_core"]
    assert _tile_inputs((32, 48, 48), (3, 3), (1, 1), 5, range(24)) <= lim["fan_in_per_core"]
    assert 16 * 24 * geo.fan_in() <= lim["synapses_per_core"]
    assert cores == 2 * 48


def test_what_cannot_map_is_refused_with_the_layer_named():
    with pytest.raises(SbcError, match="layer 'huge'.*overflows the 24-bit"):
        mapping.fan_in_split(_linear(1, 4), 127, count_bound=1 << 20, sum_bound=None,
                             name="huge")
    with pytest.raises(SbcError, match="encoder 'e'.*25-bit payloads"):
        mapping.encoder_mapping("e", 16, payload_bits=25)
    # through lowering: static thresholds without max_count leave counts unbounded
    with pytest.raises(SbcError, match="layer 'lin'"):
        lower(spiked_linear_graph(policy="static"), mode="graded")


def test_lowering_names_what_it_cannot_handle():
    g = spiked_linear_graph()
    g.nodes[1].inputs[0] = "x"  # counts not from an encoder
    g.values["x"] = Value("x", ("batch", 16), "int32")
    with pytest.raises(SbcError):
        lower(g, mode="graded")
    with pytest.raises(SbcError, match="unknown Lava signalling mode 'analog'"):
        lower(spiked_linear_graph(), mode="analog")
    with pytest.raises(SbcError, match="coding 'twos_complement'"):
        lower(spiked_linear_graph(), CompileConfig(coding="twos_complement"))


def test_program_round_trips_through_an_artifact(tmp_path):
    g = spiked_linear_graph(policy="static", max_count=7)
    program = lower(g, mode="unary")
    art = Artifact(g, {}, {}, program.to_members())
    art.save(tmp_path / "m.sbc")
    loaded = LavaProgram.from_members(Artifact.load(tmp_path / "m.sbc").programs)
    assert loaded.plan == json.loads(json.dumps(program.plan))
    assert loaded.mode == "unary" and set(loaded.arrays) == set(program.arrays)
    assert program.arrays["param/vth"].shape == ()
    for key, arr in program.arrays.items():
        assert loaded.arrays[key].shape == arr.shape, key
        np.testing.assert_array_equal(loaded.arrays[key], arr)


def test_malformed_program_members_are_artifact_errors():
    members = lower(spiked_linear_graph(), mode="graded").to_members()
    with pytest.raises(ArtifactError, match="malformed"):
        LavaProgram.from_members({**members, PLAN_MEMBER: b"{not json"})
    plan = json.loads(members[PLAN_MEMBER])
    del plan["synapses"]
    with pytest.raises(ArtifactError, match="lacks 'synapses'"):
        LavaProgram.from_members({**members, PLAN_MEMBER: json.dumps(plan).encode()})
    with pytest.raises(ArtifactError, match="missing"):
        LavaProgram.from_members({PLAN_MEMBER: members[PLAN_MEMBER]})


def test_shapes_follow_the_feeds_whatever_the_declared_dims():
    g = spiked_linear_graph()
    g.values["d"] = Value("d", ("unk__0", "Min(16, n)"), "float32")  # not resolvable by name
    program = lower(g, mode="graded")
    shapes = infer_shapes(program.plan, program.params(), {"x": np.ones((5, 16), np.float32)})
    assert shapes == {"x": (5, 16), "c": (5, 16), "v": (5, 1), "acc": (5, 1, 8), "d": (5, 8),
                      "y": (5, 8)}


@pytest.mark.parametrize("form", ["fused", "split"])
def test_topology_wires_every_read_to_one_producer(form):
    plan = lower(spiked_linear_graph(), mode="bitwise").plan
    specs = build_topology(plan, form)
    produced = [v for s in specs for v in s.produces]
    assert len(produced) == len(set(produced))
    for spec in specs:
        for v in spec.inputs:
            assert any(v in s.outputs for s in specs if s is not spec)
    kinds = sorted(s.kind for s in specs)
    assert kinds == (["level", "level"] if form == "fused"
                     else ["accumulator", "compute", "encoder"])
    assert [s for s in specs if s.records][0].records == ["y"]


def test_a_large_convolution_lowers_from_its_geometry():
    """A 3x3 convolution over 3x1024x1024 (56 M synapses were it expanded, gigabytes as index
    arrays): the program holds the kernel and the geometry, and the mapping follows from them."""
    rng = np.random.default_rng(0)
    g = Graph("big", ["x"], ["acc"], {"x": Value("x", (1, 3, 1024, 1024), "float32")}, [])
    w = g.add_param("w", rng.integers(-127, 128, size=(6, 3, 3, 3)).astype(np.int8))
    g.add_value("c", (1, 3, 1024, 1024), "int32")
    g.add_value("v", (1, 1, 1, 1), "float32")
    g.add_value("acc", (1, 6, 512, 512), "int32")
    g.nodes = [Node("enc", "spike_encode", ["x"], ["c", "v"],
                    {"policy": "dynamic", "granularity": "sample", "max_count": 15}),
               Node("conv", "spike_conv", ["c", w], ["acc"], {"strides": [2, 2],
                                                               "pads": [1, 1, 1, 1]})]
    program = lower(g, mode="bitwise")
    assert set(program.arrays) == {"param/w"}
    layer = program.plan["mapping"]["layers"]["conv"]
    geo = layer_geometry("spike_conv", (6, 3, 3, 3), program.plan["synapses"][0]["attrs"],
                         (3, 1024, 1024))
    # per axis, output taps over the input: 512 outputs x 3 taps minus the one in the pad
    assert layer["synapses"] == geo.synapses() == 6 * 3 * (512 * 3 - 1) ** 2
    assert layer["accumulator_neurons"] == 6 * 512 * 512 and layer["fan_in"] == 27
    assert layer["shared_weight_bytes"] == 162 and layer["cores"] > 1
