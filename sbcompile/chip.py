"""Energy and latency per inference on a model of a neuromorphic chip: the compiled network's
Lava program mapped onto SANA-FE's Loihi architecture and simulated there with the spike traffic
of a real run.

SANA-FE (the ``sanafe`` package, the ``chip`` extra) simulates a mapped spiking network on an
architecture description and prices every event (neuron update, spike out, synaptic event,
message and network-on-chip hop) with per-event energies and latencies; its Loihi description
(``sanafe/examples/loihi.yaml``) takes them from Davies et al. 2018 (IEEE Micro). The mapping is
the Lava program's (``runtime/lava/mapping.py``): each spike encoder's neurons spread evenly over
its mapped neuro-cores, each layer's accumulator rows (rows that read the same inputs together)
over the neuro-cores the Lava mapping gives it; a Loihi 2 core holding more than the 1024
compartments of SANA-FE's Loihi models becomes as many SANA-FE cores as it needs, side by side;
cores are numbered in program order onto a mesh of 4-core tiles. The traffic is the run's own:
each encoder neuron is a SANA-FE input unit replaying the spikes our coding expands its counts
into (tokens one after another, T steps each), so the spike messages and synaptic events SANA-FE
counts are those of the run.

What it leaves out, said in the result's ``basis``: the compute processes (decode, norms,
pooling) that the chip's embedded processors run, input units are free in SANA-FE's Loihi model
(an encoder's integrate-and-fire update is not priced, its spikes are), and layers run one after
another (a layer's encoders wait for the previous layer's decode), each simulated apart so its
memory stays bounded; a layer too large for one simulation runs in core-aligned chunks whose
energies add up and whose per-step latencies are the slowest chunk's (contention between chunks
on the network is not modelled).
"""
from __future__ import annotations

import contextlib
import io
import math
import tempfile
from importlib.resources import files
from pathlib import Path

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.codings import expand
from sbcompile.progress import track
from sbcompile.runtime.lava.coding import MODE_CODING, window_steps
from sbcompile.runtime.lava.program import LavaProgram

ARCHES = ("loihi",)
CORES_PER_TILE = 4       # Loihi: 4 neuro-cores per tile (loihi.yaml)
MESH_WIDTH = 8           # Loihi: an 8 x 4 mesh of tiles per chip (loihi.yaml)
CHUNK_SYNAPSES = 300_000  # synapses per SANA-FE simulation (about 1.5 KB each while loaded)
COMPARTMENTS = 1024      # neurons per core in SANA-FE's Loihi models (loihi_max_compartments)
NEVER = 1e30             # accumulator threshold: accumulators integrate, they never fire
ENERGY_CLASSES = ("synapse", "dendrite", "soma", "network")


def spike_traffic(graph, feeds: dict[str, np.ndarray], program: LavaProgram) -> dict:
    """The integer counts every spike encoder of ``program`` receives on ``feeds`` (the
    reference interpreter's, which the Lava simulation reproduces exactly)."""
    from sbcompile.runtime.reference import evaluate

    wanted = [e["counts"] for e in program.plan["encoders"]]
    return {k: np.asarray(v) for k, v in evaluate(graph, feeds, keep=wanted).items()
            if k in wanted}


def simulate(program: LavaProgram, counts: dict[str, np.ndarray], samples: int,
             arch: str = "loihi", chunk_synapses: int = CHUNK_SYNAPSES) -> dict:
    """``chip.sanafe`` of report.json: energy (total and per SANA-FE event class) and latency
    per inference of the spike layers of ``program`` on ``arch``, with the spike traffic of
    ``counts`` (``spike_traffic``) over ``samples`` inferences."""
    sanafe = _import_sanafe()
    if arch not in ARCHES:
        raise SbcError(f"unknown chip '{arch}' (known: {', '.join(ARCHES)})")
    plan = program.plan
    placement = _placement(program)
    arch_path = _write_arch(placement)
    try:
        hw = sanafe.load_arch(str(arch_path))
    finally:
        arch_path.unlink()
    cores = [c for tile in hw.tiles for c in tile.cores]
    encoders = {e["name"]: e for e in plan["encoders"]}
    layers, totals = {}, {"energy": dict.fromkeys(ENERGY_CLASSES, 0.0), "sim_time": 0.0,
                          "steps": 0, "spike_messages": 0, "synaptic_ops": 0,
                          "neurons_updated": 0}
    for syn in track(plan["synapses"], len(plan["synapses"]), "SANA-FE: layers simulated"):
        enc = encoders[syn["encoder"]]
        trains = _spike_trains(counts[enc["counts"]], enc["neurons"], program.mode)
        result = _simulate_layer(sanafe, hw, cores, program, syn, placement, trains,
                                 chunk_synapses)
        layers[syn["layer"]] = _per_inference(result, samples)
        for k in ENERGY_CLASSES:
            totals["energy"][k] += result["energy"][k]
        for k in ("sim_time", "steps", "spike_messages", "synaptic_ops", "neurons_updated"):
            totals[k] += result[k]
    total = sum(totals["energy"].values())
    return {"arch": ARCH_NAME, "energy_uJ": total / samples * 1e6,
            "latency_ms": totals["sim_time"] / samples * 1e3,
            "by_class": {k: v / samples * 1e6 for k, v in totals["energy"].items()},
            "steps": totals["steps"] / samples, "samples": int(samples),
            "cores": placement["cores"], "lava_neuro_cores": placement["lava_cores"],
            "mode": program.mode,
            "events": {k: int(totals[k]) for k in ("spike_messages", "synaptic_ops",
                                                    "neurons_updated")},
            "layers": layers, "basis": BASIS, "sanafe_version": _version()}


ARCH_NAME = ("loihi: SANA-FE 2.2 loihi.yaml event energies and latencies (Davies et al. 2018), "
             "1024 compartments per core; each core of the Lava Loihi 2 mapping as the SANA-FE "
             "cores its neurons need")
BASIS = ("ESTIMATE from a chip model: SANA-FE simulation of the spike layers on its Loihi "
         "architecture with a real run's spikes; leaves out the embedded processors' work "
         "(decode, norms, pooling) and the encoders' neuron updates; layers one after another")


def _import_sanafe():
    try:
        import sanafe
    except ImportError:
        raise SbcError("the chip model needs the sanafe package: pip install "
                       "'sbcompile[chip]'") from None
    return sanafe


def _version() -> str:
    from importlib.metadata import version

    return version("sanafe")


# ---- mapping ------------------------------------------------------------------------------
def _placement(program: LavaProgram) -> dict:
    """Global core ids in program order. Each core of the Lava mapping becomes as many SANA-FE
    cores as its neurons need at SANA-FE's 1024 compartments per core (its Loihi neuron and
    dendrite models hold no more), placed side by side: an encoder's neurons spread evenly over
    them, a layer's accumulator neurons in the mapping's packing order (``synapse_list``)."""
    plan = program.plan
    enc_map, layer_map = plan["mapping"]["encoders"], plan["mapping"]["layers"]
    next_core, encoders, layers = 0, {}, {}

    def spread(neurons: int, lava_cores: int) -> dict:
        nonlocal next_core
        per_core = min(-(-neurons // lava_cores), COMPARTMENTS)
        cores = -(-neurons // per_core)
        block = {"first": next_core, "per_core": per_core, "cores": cores, "neurons": neurons}
        next_core += cores
        return block
    for syn in plan["synapses"]:
        name = syn["encoder"]
        if name not in encoders:
            encoders[name] = spread(enc_map[name]["neurons"], enc_map[name]["cores"])
        layers[syn["name"]] = spread(syn["rows"], layer_map[syn["name"]]["cores"])
    return {"encoders": encoders, "layers": layers, "cores": next_core,
            "lava_cores": plan["mapping"]["neuro_cores"]}


def synapse_list(geometry, parts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every structural synapse of a layer (one token or sample) as (input neuron, accumulator
    neuron, flat weight index), int64 each, sorted by accumulator neuron. Accumulator neurons
    are numbered in the Lava mapping's packing order, rows that read the same inputs together:
    linear (group, partial, output); conv (group, partial, output position, channel of the
    group). Partial p of a row sums the p-th contiguous slice of its weight entries."""
    width = max(-(-geometry.row_entries // parts), 1)
    if geometry.op == "spike_linear":
        groups, n = geometry.out_shape
        per_group = geometry.row_entries
        idx = np.arange(groups * n * per_group, dtype=np.int64)
        g, n_out, e = idx // (n * per_group), idx // per_group % n, idx % per_group
        src = g * per_group + e
        dst = (g * parts + e // width) * n + n_out
        windex = n_out * geometry.weight_shape[1] + src
    else:
        o_total, c_group = geometry.weight_shape[0], geometry.weight_shape[1]
        o_group = o_total // geometry.group
        spatial, kernel = geometry.in_shape[1:], geometry.weight_shape[2:]
        in_pos, valid = np.zeros((1, 1), np.int64), np.ones((1, 1), bool)
        for axis, (size, k) in enumerate(zip(spatial, kernel)):
            out = geometry.out_shape[1 + axis]
            where = (np.arange(out)[:, None] * geometry.strides[axis] - geometry.pads[axis]
                     + np.arange(k)[None, :] * geometry.dilations[axis])
            ok = (where >= 0) & (where < size)
            in_pos = (in_pos[:, None, :, None] * size + where[None, :, None, :]).reshape(
                in_pos.shape[0] * out, -1)
            valid = (valid[:, None, :, None] & ok[None, :, None, :]).reshape(in_pos.shape)
        pos, tap = np.nonzero(valid)  # output position, kernel tap of every valid pair
        taps, positions = in_pos.shape[1], in_pos.shape[0]
        o = np.arange(o_total, dtype=np.int64)[:, None, None]
        c = np.arange(c_group, dtype=np.int64)[None, :, None]
        g = o // o_group
        e = c * taps + tap[None, None, :]
        src = ((g * c_group + c) * math.prod(spatial) + in_pos[pos, tap][None, None, :])
        dst = (((g * parts + e // width) * positions + pos[None, None, :]) * o_group
               + o % o_group)
        windex = (o * c_group + c) * taps + tap[None, None, :]
        src, dst, windex = (a.ravel() for a in np.broadcast_arrays(src, dst, windex))
    order = np.argsort(dst, kind="stable")
    return src[order], dst[order], windex[order]


def _write_arch(placement: dict) -> Path:
    """SANA-FE's Loihi description with the placement's cores: tiles of 4 cores on an 8-wide
    mesh, and on each encoder core one input unit per neuron placed there (an input unit
    replays one spike train)."""
    import yaml

    loihi = files("sanafe.examples").joinpath("loihi.yaml").read_text()
    base = yaml.safe_load(loihi)["architecture"]
    template = base["tile"][0]
    core_t = template["core"][0]
    lif = [s for s in core_t["soma"] if s["attributes"]["model"] != "input"]
    inputs = [s for s in core_t["soma"] if s["attributes"]["model"] == "input"][0]
    on_core = [0] * placement["cores"]
    for e in placement["encoders"].values():
        for j in range(-(-e["neurons"] // e["per_core"])):
            on_core[e["first"] + j] = min(e["per_core"], e["neurons"] - j * e["per_core"])
    n_tiles = -(-placement["cores"] // CORES_PER_TILE)
    tiles = []
    for t in range(n_tiles):
        cores = []
        for c in range(CORES_PER_TILE):
            k = t * CORES_PER_TILE + c
            n_in = on_core[k] if k < len(on_core) else 0
            soma = lif + ([{"name": f"inputs[0..{n_in - 1}]",
                            "attributes": inputs["attributes"]}] if n_in else [])
            cores.append({**core_t, "name": f"core_{k}", "soma": soma})
        tiles.append({"name": f"tile_{t}", "attributes": template["attributes"], "core": cores})
    attrs = {**base["attributes"], "width": MESH_WIDTH, "height": -(-n_tiles // MESH_WIDTH)}
    doc = {"architecture": {"name": "loihi_sbcompile", "attributes": attrs, "tile": tiles}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.dump(doc, f, Dumper=_no_aliases())
    return Path(f.name)


def _no_aliases():
    import yaml

    class NoAliases(yaml.SafeDumper):
        """SANA-FE's YAML reader takes no anchors: every repeated unit is written out."""

        def ignore_aliases(self, data):
            return True
    return NoAliases


# ---- traffic ------------------------------------------------------------------------------
def _spike_trains(counts: np.ndarray, neurons: int, mode: str) -> np.ndarray:
    """bool [neurons, steps]: each encoder neuron's spikes, its tokens one after another, T
    steps each (T as the Lava runner picks it for this tensor)."""
    per_token = counts.reshape(-1, neurons)
    T = window_steps(per_token, mode)
    events = expand(per_token, MODE_CODING[mode], T)  # [T, tokens, neurons]
    return np.ascontiguousarray((events != 0).transpose(2, 1, 0).reshape(neurons, -1))


def _chunks(dst: np.ndarray, lay: dict, budget: int) -> list[tuple[int, int]]:
    """Runs of whole cores (first, end) whose synapses number at most ``budget`` (one core at
    least); ``dst`` sorted."""
    bounds = np.searchsorted(dst, np.arange(lay["cores"] + 1) * lay["per_core"])
    out, first = [], 0
    for k in range(1, lay["cores"] + 1):
        if bounds[k] - bounds[first] > budget and k - 1 > first:
            out.append((first, k - 1))
            first = k - 1
    out.append((first, lay["cores"]))
    return out


def _simulate_layer(sanafe, hw, cores, program, syn, placement, trains, budget) -> dict:
    src_all, dst_all, windex = synapse_list(program.geometry(syn), syn["fan_in_split"])
    weights = program.param(syn["weight"]).reshape(-1)
    lay = placement["layers"][syn["name"]]
    enc = placement["encoders"][syn["encoder"]]
    steps = trains.shape[1]
    kind = ("loihi_conv_synapse" if syn["op"] == "spike_conv" else
            "loihi_dense_synapse" if syn["dense"] else "loihi_sparse_synapse")
    energy = dict.fromkeys(ENERGY_CLASSES, 0.0)
    step_time = np.zeros(steps)
    fired = synaptic = updated = 0
    for chunk, (first, end) in enumerate(_chunks(dst_all, lay, budget)):
        row0, row1 = first * lay["per_core"], min(end * lay["per_core"], syn["rows"])
        lo, hi = np.searchsorted(dst_all, [row0, row1])
        # the first chunk replays the whole encoder (its spike count is SANA-FE's), later ones
        # the encoder neurons with synapses there (free input units: the energy is the same)
        used = np.arange(trains.shape[0]) if chunk == 0 else np.unique(src_all[lo:hi])
        net = sanafe.Network()
        src = net.create_neuron_group("encoder", used.size, model_attributes={})
        for j, neuron in zip(used.tolist(), src):
            neuron.set_attributes(soma_hw_name=f"inputs[{j % enc['per_core']}]",
                                  model_attributes={"spikes": trains[j].tolist()})
            neuron.map_to_core(cores[enc["first"] + j // enc["per_core"]])
        dst = net.create_neuron_group(
            "accumulator", row1 - row0, soma_hw_name="loihi_lif", default_synapse_hw_name=kind,
            model_attributes={"threshold": NEVER, "reset_mode": "none", "leak_decay": 1.0})
        for i, neuron in enumerate(dst):
            neuron.map_to_core(cores[lay["first"] + (row0 + i) // lay["per_core"]])
        src.connect_neurons_sparse(
            dst, {"weight": weights[windex[lo:hi]].astype(float).tolist()},
            list(zip(np.searchsorted(used, src_all[lo:hi]).tolist(),
                     (dst_all[lo:hi] - row0).tolist())))
        chip = sanafe.SpikingChip(hw)
        chip.load(net)
        with contextlib.redirect_stdout(io.StringIO()):  # its progress line
            r = chip.sim(steps, perf_trace=True, processing_threads=1)
        for k in ENERGY_CLASSES:
            energy[k] += r["energy"][k]
        step_time = np.maximum(step_time, r["perf_trace"]["sim_time"])
        fired = fired if chunk else r["neurons_fired"]
        synaptic += r["spikes"]
        updated += r["neurons_updated"]
        del chip, net
    return {"energy": energy, "sim_time": float(step_time.sum()), "steps": steps,
            "spike_messages": int(fired), "synaptic_ops": int(synaptic),
            "neurons_updated": int(updated)}


def _per_inference(result: dict, samples: int) -> dict:
    return {"energy_uJ": sum(result["energy"].values()) / samples * 1e6,
            "latency_ms": result["sim_time"] / samples * 1e3, "steps": result["steps"] / samples,
            "spike_messages": result["spike_messages"], "synaptic_ops": result["synaptic_ops"]}


def chip_section(model, arch: str | None = None, feeds: dict | None = None) -> dict:
    """report.json's ``chip`` for a compiled model (``sbcompile.api.CompiledModel``):
    ``mapping`` from its stored Lava program; with ``arch``, ``sanafe``, the chip model's
    simulation of ``feeds`` on the stored program or, when none is stored, one lowered now."""
    from sbcompile.backends.lava import lower
    from sbcompile.runtime.reference import check_feeds

    stored = any(k.startswith("lava/") for k in model.artifact.programs)
    if arch is None:
        return {"mapping": mapping_summary(model.program("lava"))} if stored else {}
    program = model.program("lava") if stored else lower(model.graph, model.config)
    feeds = check_feeds(model.graph, feeds)
    samples = len(next(iter(feeds.values())))
    return {"mapping": mapping_summary(program),
            "sanafe": simulate(program, spike_traffic(model.graph, feeds, program), samples,
                               arch)}


def mapping_summary(program: LavaProgram) -> dict:
    """``chip.mapping`` of report.json: the Lava Loihi 2 mapping's neuro-cores, chips, synapses,
    synaptic memory (every synapse stored, and the weights stored once), the layers split by
    fan-in, the widest spike message and the processes left to the embedded processors."""
    m = program.plan["mapping"]
    layers = m["layers"].values()
    return {"neuro_cores": m["neuro_cores"], "chips": m["chips"],
            "synapses": sum(layer["synapses"] for layer in layers),
            "synapse_memory_bytes": sum(layer.get("synapse_memory_bytes", 0) for layer in layers),
            "shared_weight_bytes": sum(layer.get("shared_weight_bytes", 0) for layer in layers),
            "fan_in_split_layers": sum(layer["fan_in_split"] > 1 for layer in layers),
            "message_bits": max((e["message_bits"] for e in m["encoders"].values()), default=0),
            "embedded_processes": len(m["embedded_processes"])}
