"""The compile report: report.json's structure (DESIGN.md), the facts its summary shows, and the
terminal view (the HTML page is ``report_html``).

Names (of models, layers, outputs) are data, never markup: they are escaped for rich
(``[bold]`` stays text), for matplotlib (``$...$`` stays text, not mathtext) and for HTML."""
from __future__ import annotations

from collections import Counter

from sbcompile.config import CompileConfig
from sbcompile.ir.graph import Graph
from sbcompile.ir.records import analysis, spiked_layers


def model_summary(graph: Graph) -> dict:
    ops = Counter(n.op for n in graph.nodes)
    return {"name": graph.name,
            "inputs": {n: {"shape": list(graph.values[n].shape), "dtype": graph.values[n].dtype}
                       for n in graph.inputs},
            "outputs": {n: {"shape": list(graph.values[n].shape),
                            "dtype": graph.values[n].dtype} for n in graph.outputs},
            "parameters": graph.param_count(), "nodes": len(graph.nodes),
            "ops": dict(sorted(ops.items()))}


def build_report(graph: Graph, float_graph: Graph, config: CompileConfig) -> dict:
    measured = analysis(graph)
    report = {"model": {**model_summary(float_graph), "compiled_ops": model_summary(graph)["ops"]},
              "config": config.to_json(), "measured": measured is not None}
    if measured is None:
        layers = [{"name": name, "op": info.op, "fan_in": info.fan_in, "fan_out": info.fan_out}
                  for name, info in spiked_layers(graph).items()]
        report.update({"layers": layers, "totals": {"layers_spiked": len(layers)},
                       "energy": {}, "outputs_fidelity": {},
                       "note": "no calibration data: sparsity, energy and fidelity not measured"})
    else:
        report.update({"layers": measured.layers, "totals": measured.totals,
                       "energy": measured.energy, "outputs_fidelity": measured.outputs_fidelity,
                       "calibration_samples": measured.samples})
    return report


# ---- facts the summary shows (terminal and HTML) -------------------------------------------
def energy_rows(report: dict) -> list[dict]:
    """Energy per inference by basis, every one an estimate: the op-count presets (op counts
    of the calibration run times a price table), then the chip model when simulated."""
    rows = [{"basis": name, "kind": "op counts x prices", "spiking_uJ": e["spiking_pJ"] / 1e6,
             "dense_fp16_uJ": e["dense_fp16_pJ"] / 1e6, "dense_int8_uJ": e["dense_int8_pJ"] / 1e6,
             "vs_fp16": e["reduction_vs_fp16"], "vs_int8": e["reduction_vs_int8"],
             "convention": e["convention"], "why": costlier_note(report, name)}
            for name, e in report.get("energy", {}).items()]
    chip = report.get("chip", {}).get("sanafe")
    if chip:
        rows.append({"basis": "sanafe " + chip["arch"].split(":")[0], "kind": "chip model",
                     "spiking_uJ": chip["energy_uJ"], "latency_ms": chip["latency_ms"],
                     "convention": chip["basis"],
                     "why": ""})
    return rows


def costlier_note(report: dict, preset: str) -> str:
    """Why a preset prices the spiking model above the dense FP16 one ('' when it does not):
    the synaptic operations per dense MAC that the coding produces, against the ratio of the
    two prices."""
    e = report["energy"][preset]
    ops = report["totals"].get("ops", {})
    syn, macs = ops.get("synaptic_ops", 0), ops.get("dense_macs", 0)
    if e["spiking_pJ"] <= e["dense_fp16_pJ"] or not syn or not macs:
        return ""
    per_op = e["spiking_pJ"] / syn
    per_mac = e["dense_fp16_pJ"] / macs
    tot = report["totals"]["sparsity"]
    return (f"spiking costs more on this basis: the {tot['coding']} code (T={tot['T']}) makes "
            f"{syn / macs:.2f} synaptic ops per dense MAC, each priced {per_op:.2f} pJ (all "
            f"this basis charges, over its synaptic ops) against {per_mac:.2f} pJ per dense "
            f"MAC; it pays off only below {per_mac / per_op:.2f} ops per MAC")


# ---- terminal ----------------------------------------------------------------------------------
COMPACT = ("layer", "zero", "slot", "spk/ch", "cos out", "nJ")


def print_terminal(report: dict, energy_preset: str = "spikingbrain", console=None) -> None:
    """The report in a terminal: the full layer table where the terminal is wide enough, else a
    compact one (names elided in the middle) and a pointer to the HTML report; in a pipe or a
    log, a plain layout that wraps and truncates nothing."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    cfg = report["config"]
    console.print(f"[bold]{escape(report['model']['name'])}[/]  preset "
                  f"[cyan]{escape(cfg['preset'])}[/]  coding {escape(cfg['coding'])}  "
                  f"params {report['model']['parameters']:,}", soft_wrap=not console.is_terminal)
    if not report.get("measured"):
        _say(console, report.get("note", "no measurements"))
        return
    columns, rows = _layer_rows(report, energy_preset)
    if not console.is_terminal:
        _print_plain(console, columns, rows)
    else:
        _print_table(console, columns, rows, _compact_rows(report, energy_preset),
                     energy_preset)
    for line in summary_lines(report, energy_preset):
        _say(console, line)


def summary_lines(report: dict, energy_preset: str) -> list[str]:
    """The report's totals as lines of text: where the error is made, sparsity, energy (with
    its basis and why spiking costs more where it does), the chip model, bounds, outputs."""
    lines = [fidelity_summary(report)]
    tot = report["totals"]["sparsity"]
    e = report["energy"][energy_preset]
    lines.append(f"total: count-zero {tot['count_zero']:.1%}, spike-slot {tot['spike_slot']:.1%}"
                 f" (window {tot['window']}: {tot['spike_slot_window3']:.1%}), "
                 f"{tot['mean_spikes_per_channel']:.2f} spikes/channel")
    lines.append(f"energy estimate ({energy_preset}): {e['spiking_pJ'] / 1e3:,.2f} nJ spiking vs "
                 f"{e['dense_fp16_pJ'] / 1e3:,.2f} nJ dense FP16 "
                 f"({change_words(e['reduction_vs_fp16'])}), "
                 f"{change_words(e['reduction_vs_int8'])} vs INT8")
    if costlier_note(report, energy_preset):
        lines.append(costlier_note(report, energy_preset))
    chip = report.get("chip", {}).get("sanafe")
    if chip:
        lines.append(f"chip model estimate ({chip['arch'].split(':')[0]}, SANA-FE): "
                     f"{chip['energy_uJ']:,.3f} uJ and {chip['latency_ms']:,.4f} ms per inference"
                     f" ({chip['steps']:g} steps on {chip['cores']} SANA-FE cores; spike "
                     "layers only)")
    nb = report.get("neurobench")
    if nb:
        m = nb["metrics"]
        ops = m["SynapticOperations"]
        lines.append(f"NeuroBench ({nb['samples']} samples, per sample): ActivationSparsity "
                     f"{m['ActivationSparsity']:.4f}, ConnectionSparsity "
                     f"{m['ConnectionSparsity']:.4f}, SynapticOperations "
                     f"{ops['Effective_MACs']:,.0f} effective MACs + {ops['Effective_ACs']:,.0f}"
                     f" effective ACs of {ops['Dense']:,.0f} dense, Footprint "
                     f"{m['Footprint']:,} bytes")
    if report.get("count_bounds"):
        bounds = report["count_bounds"].values()
        lines.append(f"count bounds measured on calibration (x{next(iter(bounds))['margin']:g}"
                     f" margin): largest {max(b['bound'] for b in bounds)}; counts beyond "
                     "saturate (`sbcompile run` counts them)")
    for out, f in report["outputs_fidelity"].items():
        extra = (f", argmax agreement {f['argmax_agreement']:.1%}"
                 if "argmax_agreement" in f else "")
        lines.append(f"output {out}: cosine {f['cosine']:.4f}, SNR {fmt(f['snr_db'])} dB{extra}")
    return lines


def change_words(reduction: float) -> str:
    """A reduction as words: '97.7% less' or '13.5x more' (never '-1349.1%')."""
    if reduction >= 0:
        return f"{reduction:.1%} less"
    return f"{1 - reduction:,.1f}x as much"


def _say(console, text: str) -> None:
    """One line of plain text: markup-free, wrapped by words on a terminal, never in a pipe."""
    from rich.markup import escape

    console.print(escape(text), soft_wrap=not console.is_terminal, highlight=False)


def _layer_rows(report: dict, energy_preset: str) -> tuple[list[str], list[dict]]:
    contribution = all("contribution" in layer for layer in report["layers"])
    columns = ["layer", "op", "in->out", "zero", "slot", "spk/ch", "T", "T max", "cos iso",
               "cos out", "own err", "pJ"] + (["recovers"] if contribution else [])
    rows = []
    for layer in report["layers"]:
        s = layer["sparsity"]
        fid = layer["fidelity"]
        row = {"layer": layer["name"], "op": layer["op"],
               "in->out": f"{layer['fan_in']}->{layer['fan_out']}",
               "zero": f"{s['count_zero']:.1%}", "slot": f"{s['spike_slot']:.1%}",
               "spk/ch": f"{s['mean_spikes_per_channel']:.2f}", "T": fmt(s["T"]),
               "T max": fmt(s.get("T_max")),
               "cos iso": f"{fid['isolated']['cosine']:.4f}" if "isolated" in fid else "-",
               "cos out": f"{fid['output']['cosine']:.4f}",
               "own err": f"{fid['introduced_share']:.0%}" if "introduced_share" in fid else "-",
               "pJ": f"{layer_energy(layer, report, energy_preset):,.0f}"}
        if contribution:
            row["recovers"] = f"{layer['contribution']['recovered_cosine']:+.4f}"
        rows.append(row)
    return columns, rows


def _compact_rows(report: dict, energy_preset: str) -> list[dict]:
    """The few columns that matter, in short forms."""
    return [{"layer": layer["name"], "zero": f"{layer['sparsity']['count_zero']:.0%}",
             "slot": f"{layer['sparsity']['spike_slot']:.0%}",
             "spk/ch": f"{layer['sparsity']['mean_spikes_per_channel']:.2f}",
             "cos out": f"{layer['fidelity']['output']['cosine']:.4f}",
             "nJ": f"{layer_energy(layer, report, energy_preset) / 1e3:,.4g}"}
            for layer in report["layers"]]


def _print_plain(console, columns: list[str], rows: list[dict]) -> None:
    """Columns padded to their widest cell, two spaces apart; lines as long as they need."""
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in columns}

    def line(cells: dict) -> str:
        return "  ".join(cells[c].ljust(widths[c]) if c in ("layer", "op") else
                         cells[c].rjust(widths[c]) for c in columns).rstrip()
    console.out(line({c: c for c in columns}), highlight=False)
    for r in rows:
        console.out(line(r), highlight=False)


def _print_table(console, columns: list[str], rows: list[dict], compact: list[dict],
                 energy_preset: str) -> None:
    """The full table if it fits the terminal, else the compact one with a pointer to HTML."""
    from rich.markup import escape

    full = _table(columns, [{c: escape(v) for c, v in r.items()} for r in rows])
    if _width(console, full) <= console.width:
        console.print(full)
        return
    narrow = _table(COMPACT, [{**r, "layer": "x"} for r in compact])
    room = max(console.width - _width(console, narrow) + 1, 6)
    console.print(_table(COMPACT, [{c: escape(elide_middle(v, room) if c == "layer" else v)
                                    for c, v in r.items()} for r in compact]))
    _say(console, f"compact view at {console.width} columns (nJ: {energy_preset} estimate); "
                  "`sbcompile report ARTIFACT --html report.html` has every column")


def _table(columns, rows):
    from rich import box
    from rich.table import Table

    t = Table(show_edge=False, header_style="bold", box=box.SIMPLE_HEAD)
    for col in columns:
        t.add_column(col, justify="left" if col in ("layer", "op") else "right",
                     no_wrap=True)
    for r in rows:
        t.add_row(*(r[c] for c in columns))
    return t


def _width(console, renderable) -> int:
    from rich.measure import Measurement

    unbounded = console.options.update_width(1 << 16)
    return Measurement.get(console, unbounded, renderable).maximum


def elide_middle(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters, its middle replaced by one ellipsis (a
    layer's prefix and, given more room, its last part tell it apart)."""
    if len(name) <= width:
        return name
    head = (width - 1) * 2 // 5
    return name[:head] + "\u2026" + name[len(name) - (width - 1 - head):]


def fidelity_summary(report: dict) -> str:
    """One line on where the error is made: the worst layer and the ranking that names it, and
    the column legend (cos iso: only that layer spiked; cos out: every upstream layer spiked too;
    own err: the share of the error at its output it adds itself; recovers: end-to-end cosine
    gained by keeping it float)."""
    fid = report["totals"].get("fidelity", {})
    rankings = fid.get("rankings")
    if not rankings:  # a report from before the propagated measures
        return f"worst layer (lowest output cosine): {fid.get('worst_layer')}"
    by = fid["worst_by"]
    how = ("keeping it float recovers the most end-to-end cosine" if by == "contribution" else
           "largest error of its own on the inputs it receives; --set sensitivity=true measures "
           "each layer's end-to-end contribution")
    line = f"worst layer: {fid['worst_layer']} ({how})"
    others = sorted({r[0] for name, r in rankings.items() if r and r[0] != fid["worst_layer"]})
    if others:
        line += f"; other rankings' first: {', '.join(others)}"
    return (line + ". cos iso: only that layer spiked; cos out: all upstream spiked too; own "
            "err: share of the error at its output the layer adds itself")


def print_tune(tune: dict, console=None) -> None:
    """The tune search in the terminal: the floor, the chosen settings against the untuned
    preset, the search's size and time, and the Pareto front."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    chosen, untuned = tune["chosen"], tune["untuned"]
    goal = "least energy" if tune["objective"] == "energy" else "most sparsity"
    console.print(escape(
        f"tune: {tune['metric']} >= {tune['floor']:g} at the {goal} ({tune['energy_preset']}): "
        f"{tune['evaluations']} evaluations in {tune['seconds']:.1f} s"
        + (" (stopped at the time bound)" if tune["stopped_early"] else "")))
    t = Table("", tune["metric"], "energy nJ", "synaptic-op sparsity", show_edge=False)
    for label, p in (("tuned", chosen), ("untuned preset", untuned)):
        t.add_row(label, f"{p['metric']:.4f}", f"{p['energy_pJ'] / 1e3:,.3f}",
                  f"{p['sparsity']:.1%}")
    console.print(t)
    front = ", ".join(f"{p['metric']:.4f}@{p['energy_pJ'] / 1e3:,.2f}" for p in tune["front"])
    console.print(escape(f"Pareto front ({tune['metric']}@nJ): {front}"))


def simulated_vs_compiled(op_counts: dict, report: dict, samples: int) -> list[dict]:
    """Per spiked layer: each count measured in the simulation beside the compile-time
    estimate for ``samples`` inferences (the report's calibration average times samples; equal
    when the simulation ran on the calibration inputs)."""
    from sbcompile.passes.energy import synaptic_ops

    rows = []
    for layer in report.get("layers", []):
        sim = op_counts.get(layer["name"], {})
        ops = layer.get("ops", {})
        estimate = {"synaptic_ops": synaptic_ops(ops), "spike_messages": ops.get("spike_messages", 0),
                    "neuron_updates": ops.get("neuron_updates", 0)}
        rows.append({"layer": layer["name"],
                     **{k: {"simulated": sim.get(k), "compile_time": round(v * samples)}
                        for k, v in estimate.items()}})
    return rows


def fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if isinstance(x, float) else str(x)


def layer_energy(layer: dict, report: dict, preset: str) -> float:
    from sbcompile.passes.energy import spiking_energy

    first = report["layers"][0]["ops"] if report["layers"] else None
    if preset == "vision_snn":
        return spiking_energy(preset, layer["ops"], first if layer is report["layers"][0]
                              else None)
    return spiking_energy(preset, layer["ops"])
