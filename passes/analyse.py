"""Analysis: run the float and the spiking graph side by side on the calibration inputs (batched)
and measure, per spiked layer and for the whole model, the sparsity figures of FACTS.md section 3,
op counts by class, energy under the named presets, and fidelity against float.

Definitions (all per inference over the calibration set, coding named in the report):
- count_zero: zeros among the integer counts;
- spike_slot: 1 - events / (T * N), T the expansion length of the configured t_mode (global: one T
  for all layers; tensor: one per layer; token: each token its own), N the number of counts;
  T_max: the T the layer's count bound reserves (the expand pass's record; for the ternary
  preset the T calibration chose), at least the T measured;
- spike_slot_window: 1 - events / (window * N) for the fixed window (SpikingBrain used 3);
- mean_spikes_per_channel: events / N; silent_channels: input channels with no spike at all;
- synaptic ops: every event reaching every synapse of its fan-out (conv: exactly the output
  positions it reaches), classed by coding: binary_ac ({0,1} unit spikes), signed_ac (ternary),
  shift_add (bit-serial codings), int8_mac_graded (graded spikes multiply);
- spike_messages: events; neuron_updates: encoder neurons x steps; threshold_reductions: |x| adds
  of the dynamic threshold; rescales: one float multiply per layer output;
- weight_bytes_read: int8 weight rows of nonzero channels, per token (event-driven decode view).

Fidelity per layer (``passes/propagation.py``): ``output`` (the spiked run at the layer's output,
every upstream layer spiked; also ``propagated``), ``isolated`` (only this layer spiked, on float
inputs), ``introduced`` / ``inherited`` (the error the layer adds on the inputs it receives / the
error it receives), ``input`` and ``encode``. With ``config.sensitivity`` the analysis also keeps
each layer alone float and records the end-to-end cosine it recovers (``contribution``).
"""
from __future__ import annotations

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph
from sbcompile.ir.passes import PassBase, PassContext, PassResult
from sbcompile.ir.records import (Analysis, SpikedLayer, expansions, set_analysis,
                                  spiked_layers)
from sbcompile.passes.calibrate import check_calibration
from sbcompile.passes.energy import energy_table, synaptic_ops
from sbcompile.ir.codings import events_per_count, steps_needed, steps_per_row
from sbcompile.passes.lockstep import side_by_side, watch
from sbcompile.passes.metrics import Fidelity
from sbcompile.passes.propagation import (LayerPropagation, OutputsFidelity,
                                          layer_sensitivity)
from sbcompile.progress import track
from sbcompile.runtime.reference import values

OP_CLASS = {"graded": "int8_mac_graded", "binary": "binary_ac", "ternary": "signed_ac",
            "bitwise": "shift_add", "bitwise_bidirectional": "shift_add",
            "twos_complement": "shift_add"}
HIST_RANGE = 16  # count histogram bins -16..16 plus two overflow bins


class LayerStats:
    """Streaming accumulators of one spiked layer."""

    def __init__(self, info: SpikedLayer) -> None:
        self.info = info
        self.n = self.zeros = 0
        self.events = 0
        self.steps_max = 0
        self.rows = 0          # tokens (linear) or positions (conv) seen
        self.row_steps = 0     # sum over rows of the T each row needs alone
        self.synaptic = 0
        self.dense_macs = 0
        self.rows_read = 0
        self.outputs = 0
        self.channel_spikes: np.ndarray | None = None
        self.hist = np.zeros(2 * HIST_RANGE + 3, dtype=np.int64)
        self.encode_fid = Fidelity()
        self.output_fid = Fidelity()
        self.raster: list | None = None
        self.propagation: LayerPropagation | None = None

    def update(self, counts, vth, x_spiking, y_spiking, y_float, node_attrs, coding) -> None:
        info = self.info
        conv = info.op == "conv"
        steps = steps_needed(counts, coding)
        self.steps_max = max(self.steps_max, steps)
        ev = events_per_count(counts, coding, T=max(steps, 1))
        self.n += counts.size
        self.zeros += int(np.count_nonzero(counts == 0))
        self.events += int(ev.sum())
        channel_axis = 1 if conv else -1
        per_channel = np.moveaxis(ev, channel_axis, -1).reshape(-1, counts.shape[channel_axis])
        self.channel_spikes = per_channel.sum(0) + (0 if self.channel_spikes is None
                                                    else self.channel_spikes)
        tokens = per_channel.shape[0]
        rows = np.moveaxis(counts, channel_axis, -1).reshape(-1, counts.shape[channel_axis])
        self.rows += rows.shape[0]
        self.row_steps += int(steps_per_row(rows, coding).sum())
        self.hist += np.bincount(np.clip(counts.ravel(), -HIST_RANGE - 1, HIST_RANGE + 1)
                                 + HIST_RANGE + 1, minlength=self.hist.size)
        self.outputs += y_spiking.size
        if conv:
            group = node_attrs.get("group", 1) or 1
            reach = conv_reach(ev, info.kernel, node_attrs, y_spiking.shape[2:])
            self.synaptic += reach * (info.fan_out // group)
            self.dense_macs += int(np.prod(y_spiking.shape)) * info.fan_in
        else:
            self.synaptic += int(ev.sum()) * info.fan_out
            self.dense_macs += tokens * info.fan_in * info.fan_out
            self.rows_read += int(np.count_nonzero(rows)) * info.fan_out
        self.encode_fid.update(counts * vth, x_spiking)
        self.output_fid.update(y_spiking, y_float)
        if self.raster is None:  # first sample: its first token, or a conv input's map
            first = counts[0].ravel() if conv else rows[0]
            self.raster = first[:256].astype(int).tolist()


def conv_reach(events: np.ndarray, kernel: list[int], attrs: dict, out_shape) -> int:
    """The events times the output positions each reaches (its input position inside their
    windows), summed: per input position, its events over samples and channels times how many
    (output position, kernel tap) pairs read it, a product of one count per spatial axis."""
    n_sp = len(kernel)
    strides = attrs.get("strides") or [1] * n_sp
    dilations = attrs.get("dilations") or [1] * n_sp
    pads = attrs.get("pads") or [0] * (2 * n_sp)
    per_position = events.sum(axis=(0, 1), dtype=np.int64)
    cover = np.ones((), np.int64)
    for ax, size in enumerate(per_position.shape):
        taps = (np.arange(out_shape[ax])[:, None] * strides[ax]
                + np.arange(kernel[ax])[None, :] * dilations[ax] - pads[ax]).ravel()
        cover = np.multiply.outer(cover, np.bincount(taps[(taps >= 0) & (taps < size)],
                                                     minlength=size))
    return int((per_position * cover).sum())


def run(graph: Graph, config: CompileConfig, float_graph: Graph,
        calib, observe=None, float_envs: list[dict] | None = None,
        propagation: bool = True) -> Graph:
    """Attach the ``Analysis`` record (layers, totals, energy, outputs_fidelity).
    ``observe(float_outputs, spiking_outputs)``, when given, sees every batch's graph outputs
    (a task metric reads them); ``float_envs``, the float graph's values per batch (each
    spiked layer's output and the graph outputs; with ``propagation``, its input too), spares
    evaluating it again (a search analysing many candidates of one model). ``propagation``
    False leaves out the isolated / introduced / inherited fidelities (a search that reads only
    the end-to-end figures)."""
    calib = check_calibration(float_graph, calib)
    layers = spiked_layers(graph)
    stats = {name: LayerStats(info) for name, info in layers.items()}
    enc_attrs = {n.outputs[0]: n.attrs for n in graph.nodes if n.op == "spike_encode"}
    int_nodes = {n.outputs[0]: n.attrs for n in graph.nodes if n.op in ("spike_linear",
                                                                         "spike_conv")}
    watches = []
    for st in stats.values():
        info = st.info
        need_s = {info.counts, info.vth, info.input, info.output}
        need_f = {info.output}
        if propagation:
            st.propagation = LayerPropagation(graph, float_graph, info, st.output_fid)
            need_s |= st.propagation.keep
            need_f |= st.propagation.keep
        watches.append(watch(need_f, need_s, _layer_update(st, int_nodes[info.acc], config,
                                                           propagation)))
    outputs = OutputsFidelity(graph.outputs)

    def on_outputs(env_f: dict, env_s: dict) -> None:
        if observe is not None:
            observe({o: env_f[o] for o in graph.outputs}, {o: env_s[o] for o in graph.outputs})
        outputs.update(env_s, env_f)

    watches.append(watch(graph.outputs, graph.outputs, on_outputs))
    for i, batch in enumerate(track(calib.batches(config.calib_batch),
                                    calib.num_batches(config.calib_batch), "analysing")):
        floats = iter(float_envs[i].items()) if float_envs is not None else \
            values(float_graph, batch)
        side_by_side(floats, values(graph, batch), watches)
    samples = calib.samples
    contributions = _contributions(graph, float_graph, config, calib) if config.sensitivity \
        else None
    global_T = max([st.steps_max for st in stats.values()] or [0])
    bounds = {counts: e.T for counts, e in expansions(graph).items()}
    layer_reports = [_layer_report(name, st, config, global_T, samples, enc_attrs,
                                   bounds.get(st.info.counts)) for name, st in stats.items()]
    if contributions is not None:
        for rep in layer_reports:
            rep["contribution"] = contributions["layers"][rep["name"]]
    totals = _totals(layer_reports, stats, config, global_T)
    first = layer_reports[0]["ops"] if layer_reports else None
    outputs_fidelity = outputs.result()
    graph = graph.copy()
    set_analysis(graph, Analysis(int(samples), layer_reports, totals,
                                 energy_table(totals["ops"], first), outputs_fidelity))
    return graph


def _layer_update(st: LayerStats, node_attrs: dict, config: CompileConfig, propagation: bool):
    """The watch of one spiked layer: its statistics from both runs' values."""
    info = st.info

    def fire(env_f: dict, env_s: dict) -> None:
        st.update(env_s[info.counts], env_s[info.vth], env_s[info.input], env_s[info.output],
                  env_f[info.output], node_attrs, config.coding)
        if propagation:
            st.propagation.update(env_f, env_s)
    return fire


def _slot_denominator(st: LayerStats, config: CompileConfig, global_T: int) -> float:
    """T * N of the spike-slot figure: per token, each token's own T times its channels."""
    if config.t_mode == "token":
        return st.row_steps * (st.n / max(st.rows, 1))
    return (global_T if config.t_mode == "global" else st.steps_max) * st.n


def _sparsity_figures(n: int, zeros: int, events: int, slot_den: float, T,
                      channel_spikes: np.ndarray, config: CompileConfig) -> dict:
    n = max(n, 1)
    return {"coding": config.coding, "t_mode": config.t_mode,
            "count_zero": zeros / n,
            "spike_slot": 1 - events / slot_den if slot_den else 1.0,
            "spike_slot_window3": 1 - events / (config.window * n),
            "window": config.window,
            "mean_spikes_per_channel": events / n,
            "silent_channels": float(np.mean(channel_spikes == 0)) if channel_spikes.size
            else 0.0,
            "T": T}


def _sparsity(st: LayerStats, config: CompileConfig, global_T: int) -> dict:
    T = {"global": global_T, "tensor": st.steps_max}.get(config.t_mode,
                                                          st.row_steps / max(st.rows, 1))
    channels = st.channel_spikes if st.channel_spikes is not None else np.zeros(0)
    return _sparsity_figures(st.n, st.zeros, st.events, _slot_denominator(st, config, global_T),
                             T, channels, config)


def _ops(st: LayerStats, config: CompileConfig, samples: int, enc: dict) -> dict:
    """Op counts per inference (divided by the number of calibration samples)."""
    steps = 1 if config.coding == "graded" else max(st.steps_max, 1)
    ops = {OP_CLASS[config.coding]: st.synaptic,
           "spike_messages": st.events,
           "neuron_updates": st.n * steps,
           "threshold_reductions": st.n if enc.get("policy") == "dynamic" else 0,
           "rescales": st.outputs,
           "dense_macs": st.dense_macs,
           "weight_bytes_read": st.rows_read}
    return {k: v / samples for k, v in ops.items()}


def _layer_report(name: str, st: LayerStats, config: CompileConfig, global_T: int,
                  samples: int, enc_attrs: dict, T_max: int | None) -> dict:
    info = st.info
    return {"name": name, "op": info.op, "fan_in": info.fan_in,
            "fan_out": info.fan_out, "group_size": info.group_size,
            "weights_at_limit": info.weights_at_limit,
            "sparsity": {**_sparsity(st, config, global_T), "T_max": T_max},
            "ops": _ops(st, config, samples, enc_attrs[info.counts]),
            "fidelity": {"encode": st.encode_fid.result(), "output": st.output_fid.result(),
                         **(st.propagation.result() if st.propagation else {})},
            "count_histogram": {"range": HIST_RANGE, "counts": st.hist.tolist()},
            "raster_first_sample": st.raster}


def _totals(layer_reports: list[dict], stats: dict, config: CompileConfig,
            global_T: int) -> dict:
    """Whole-model figures: counts, events and slots summed over layers, ops summed. T is
    reported only when one T serves every layer (t_mode global)."""
    layers = list(stats.values())
    channels = np.concatenate([st.channel_spikes for st in layers
                               if st.channel_spikes is not None] or [np.zeros(0)])
    spars = _sparsity_figures(
        sum(st.n for st in layers), sum(st.zeros for st in layers),
        sum(st.events for st in layers),
        sum(_slot_denominator(st, config, global_T) for st in layers),
        global_T if config.t_mode == "global" else None, channels, config)
    ops: dict[str, float] = {}
    for rep in layer_reports:
        for k, v in rep["ops"].items():
            ops[k] = ops.get(k, 0.0) + v
    ops["synaptic_ops"] = synaptic_ops(ops)
    return {"sparsity": spars, "ops": ops, "layers_spiked": len(layer_reports),
            "fidelity": fidelity_ranking(layer_reports)}


RANKINGS = {"isolated": lambda r: 1 - r["fidelity"]["isolated"]["cosine"],
            "introduced": lambda r: 1 - r["fidelity"]["introduced"]["cosine"],
            "propagated": lambda r: 1 - r["fidelity"]["output"]["cosine"],
            "contribution": lambda r: r["contribution"]["recovered_cosine"]}


def fidelity_ranking(layer_reports: list[dict]) -> dict:
    """The layers ranked worst first by each measure the reports hold: isolated, introduced and
    propagated error (1 - cosine), and, when measured, end-to-end contribution. ``worst_layer``
    is the first of the best-founded ranking measured (contribution, introduced, propagated);
    ``worst_output_cosine`` keeps its old meaning, the lowest propagated cosine."""
    if not layer_reports:
        return {"worst_layer": None, "worst_output_cosine": None, "worst_by": None,
                "rankings": {}}
    measured = {"contribution": all("contribution" in r for r in layer_reports),
                "isolated": all("isolated" in r["fidelity"] for r in layer_reports)}
    measured["introduced"] = measured["isolated"]
    rankings = {by: [r["name"] for r in sorted(layer_reports, key=key, reverse=True)]
                for by, key in RANKINGS.items() if measured.get(by, True)}
    worst_by = next(by for by in ("contribution", "introduced", "propagated") if by in rankings)
    return {"worst_layer": rankings[worst_by][0], "worst_by": worst_by,
            "worst_output_cosine": min(r["fidelity"]["output"]["cosine"] for r in layer_reports),
            "rankings": rankings}


def _contributions(graph: Graph, float_graph: Graph, config: CompileConfig, calib) -> dict:
    """``layer_sensitivity`` over the calibration batches."""
    batches = config.calib_batch
    return layer_sensitivity(graph, float_graph, calib.batches(batches),
                             progress=lambda xs: track(xs, calib.num_batches(batches),
                                                       "layer sensitivity"))


class Analyse(PassBase):
    """The ``Analysis`` record, measured against ``ctx.float_graph`` on the calibration
    inputs (none without them)."""

    name = "analyse"

    def applies(self, graph: Graph, ctx: PassContext) -> bool:
        return ctx.calib is not None

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(run(graph, ctx.config, ctx.float_graph, ctx.calib))
