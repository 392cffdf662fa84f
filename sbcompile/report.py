"""The compile report: report.json's structure (DESIGN.md), a compact terminal table and a
self-contained HTML page with plots.

Names (of models, layers, outputs) are data, never markup: they are escaped for rich
(``[bold]`` stays text), for matplotlib (``$...$`` stays text, not mathtext) and for HTML."""
from __future__ import annotations

import base64
import html
import io
import warnings
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


# ---- terminal ----------------------------------------------------------------------------------
def print_terminal(report: dict, energy_preset: str = "spikingbrain", console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    cfg = report["config"]
    console.print(f"[bold]{escape(report['model']['name'])}[/]  preset "
                  f"[cyan]{escape(cfg['preset'])}[/]  coding {escape(cfg['coding'])}  "
                  f"params {report['model']['parameters']:,}")
    if not report.get("measured"):
        console.print(escape(report.get("note", "no measurements")))
        return
    t = Table(show_edge=False, header_style="bold")
    contribution = all("contribution" in layer for layer in report["layers"])
    columns = ["layer", "op", "in->out", "zero", "slot", "spk/ch", "T", "T max", "cos iso",
               "cos out", "own err", "pJ"] + (["recovers"] if contribution else [])
    for col in columns:
        t.add_column(col, justify="right" if col not in ("layer", "op") else "left")
    for layer in report["layers"]:
        s = layer["sparsity"]
        fid = layer["fidelity"]
        energy = _layer_energy(layer, report, energy_preset)
        row = [escape(layer["name"]), escape(layer["op"]),
               f"{layer['fan_in']}->{layer['fan_out']}",
               f"{s['count_zero']:.1%}", f"{s['spike_slot']:.1%}",
               f"{s['mean_spikes_per_channel']:.2f}", _fmt(s["T"]), _fmt(s.get("T_max")),
               f"{fid['isolated']['cosine']:.4f}" if "isolated" in fid else "-",
               f"{fid['output']['cosine']:.4f}",
               f"{fid['introduced_share']:.0%}" if "introduced_share" in fid else "-",
               f"{energy:,.0f}"]
        if contribution:
            row.append(f"{layer['contribution']['recovered_cosine']:+.4f}")
        t.add_row(*row)
    console.print(t)
    console.print(escape(fidelity_summary(report)))
    tot = report["totals"]["sparsity"]
    e = report["energy"][energy_preset]
    console.print(f"total: count-zero {tot['count_zero']:.1%}, spike-slot {tot['spike_slot']:.1%}"
                  f" (window {tot['window']}: {tot['spike_slot_window3']:.1%}), "
                  f"{tot['mean_spikes_per_channel']:.2f} spikes/channel")
    console.print(f"energy ({escape(energy_preset)}): {e['spiking_pJ'] / 1e3:,.2f} nJ spiking vs "
                  f"{e['dense_fp16_pJ'] / 1e3:,.2f} nJ dense FP16 "
                  f"({e['reduction_vs_fp16']:.1%} less), {e['reduction_vs_int8']:.1%} less than "
                  "INT8")
    if report.get("count_bounds"):
        bounds = report["count_bounds"].values()
        console.print(f"count bounds measured on calibration (x{next(iter(bounds))['margin']:g}"
                      f" margin): largest {max(b['bound'] for b in bounds)}; counts beyond "
                      "saturate (`sbcompile run` counts them)")
    for out, f in report["outputs_fidelity"].items():
        extra = (f", argmax agreement {f['argmax_agreement']:.1%}"
                 if "argmax_agreement" in f else "")
        console.print(escape(f"output {out}: cosine {f['cosine']:.4f}, SNR {_fmt(f['snr_db'])} dB"
                             f"{extra}"))


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


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if isinstance(x, float) else str(x)


def _layer_energy(layer: dict, report: dict, preset: str) -> float:
    from sbcompile.passes.energy import spiking_energy

    first = report["layers"][0]["ops"] if report["layers"] else None
    if preset == "vision_snn":
        return spiking_energy(preset, layer["ops"], first if layer is report["layers"][0]
                              else None)
    return spiking_energy(preset, layer["ops"])


# ---- HTML --------------------------------------------------------------------------------------
def render_html(report: dict, energy_preset: str = "spikingbrain") -> str:
    """One self-contained page: tables plus PNG plots embedded as data URIs."""
    title = html.escape(f"sbcompile report: {report['model']['name']}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:100%}</style></head><body>",
             f"<h1>{title}</h1>", _config_html(report)]
    if not report.get("measured"):
        parts.append(f"<p>{html.escape(report.get('note', ''))}</p></body></html>")
        return "".join(parts)
    parts += [_layers_html(report), _energy_html(report),
              "<h2>Per-layer sparsity and energy</h2>", _img(_plot_sparsity_energy(report,
                                                                                    energy_preset)),
              "<h2>Fidelity per layer</h2>", _img(_plot_fidelity(report)),
              "<h2>Count histograms</h2>", _img(_plot_histograms(report)),
              "<h2>Spike raster (first sample: first token, or conv input map; first layers)</h2>",
              _img(_plot_raster(report))]
    if report.get("tune"):
        parts += [_tune_html(report["tune"]), _img(_plot_pareto(report["tune"]))]
    parts.append("</body></html>")
    return "".join(parts)


def _config_html(report: dict) -> str:
    cfg = report["config"]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in cfg.items())
    return f"<h2>Configuration</h2><table>{rows}</table>"


def _layers_html(report: dict) -> str:
    head = ("<tr><th>layer</th><th>op</th><th>fan in</th><th>fan out</th><th>count zero</th>"
            "<th>spike slot</th><th>window</th><th>spikes/ch</th><th>silent ch</th><th>T</th>"
            "<th>T max</th>"
            "<th>cos enc</th><th>cos isolated</th><th>cos out</th><th>own error</th>"
            "<th>recovers</th><th>SNR out dB</th></tr>")
    rows = []
    for layer in report["layers"] + [{"name": "TOTAL", "op": "", "fan_in": "", "fan_out": "",
                                      "sparsity": report["totals"]["sparsity"],
                                      "fidelity": None}]:
        s = layer["sparsity"]
        fid = layer["fidelity"]
        cells = [layer["name"], layer["op"], layer["fan_in"], layer["fan_out"],
                 f"{s['count_zero']:.1%}", f"{s['spike_slot']:.1%}",
                 f"{s['spike_slot_window3']:.1%}", f"{s['mean_spikes_per_channel']:.3f}",
                 f"{s['silent_channels']:.1%}", _fmt(s["T"]), _fmt(s.get("T_max")),
                 f"{fid['encode']['cosine']:.4f}" if fid else "",
                 f"{fid['isolated']['cosine']:.4f}" if fid and "isolated" in fid else "",
                 f"{fid['output']['cosine']:.4f}" if fid else "",
                 f"{fid['introduced_share']:.0%}" if fid and "introduced_share" in fid else "",
                 f"{layer['contribution']['recovered_cosine']:+.4f}"
                 if "contribution" in layer else "",
                 _fmt(fid["output"]["snr_db"]) if fid else ""]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    coding = report["totals"]["sparsity"]["coding"]
    return (f"<h2>Layers</h2><p>Coding: {html.escape(coding)}. Sparsity figures as defined in "
            "the sbcompile docs: count zero = zero counts; spike slot = 1 - events/(T N); "
            "window = 1 - events/(window N). " + html.escape(fidelity_summary(report))
            + "</p><table>" + head + "".join(rows) + "</table>")


def _energy_html(report: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{e['spiking_pJ'] / 1e6:,.4f}</td>"
        f"<td>{e['dense_fp16_pJ'] / 1e6:,.4f}</td><td>{e['dense_int8_pJ'] / 1e6:,.4f}</td>"
        f"<td>{e['reduction_vs_fp16']:.1%}</td><td>{e['reduction_vs_int8']:.1%}</td>"
        f"<td style='text-align:left'>{html.escape(e['convention'])}</td></tr>"
        for name, e in report["energy"].items())
    return ("<h2>Energy per inference (uJ)</h2><table><tr><th>preset</th><th>spiking</th>"
            "<th>dense FP16</th><th>dense INT8</th><th>vs FP16</th><th>vs INT8</th>"
            "<th>convention</th></tr>" + rows + "</table>")


def _tune_html(tune: dict) -> str:
    rows = "".join(
        f"<tr><td>{label}</td><td>{p['metric']:.4f}</td><td>{p['energy_pJ'] / 1e3:,.3f}</td>"
        f"<td>{p['sparsity']:.1%}</td></tr>"
        for label, p in (("tuned", tune["chosen"]), ("untuned preset", tune["untuned"])))
    settings = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(s))}</td></tr>"
                       for name, s in tune["layers"].items())
    return (f"<h2>Tuning: {html.escape(tune['metric'])} &ge; {tune['floor']:g}</h2>"
            f"<p>{tune['evaluations']} evaluations in {tune['seconds']:.1f} s, objective "
            f"{html.escape(tune['objective'])}, energy preset "
            f"{html.escape(tune['energy_preset'])}.</p><table><tr><th></th>"
            f"<th>{html.escape(tune['metric'])}</th><th>energy nJ</th><th>sparsity</th></tr>"
            f"{rows}</table><h3>Chosen per-layer settings</h3><table>{settings}</table>"
            "<h3>Pareto front: fidelity vs energy</h3>")


def _plot_pareto(tune: dict) -> bytes:
    """Every configuration the search measured, its non-dominated front, the floor, the chosen
    settings and the untuned preset."""
    fig, (a, b) = _figure()
    metric = plain_text(tune["metric"])
    for ax, key, label in ((a, "energy_pJ", "energy per inference, nJ"),
                           (b, "sparsity", "synaptic-op sparsity (1 - ops / dense MACs)")):
        scale = 1e3 if key == "energy_pJ" else 1.0
        pts = tune["points"]
        ax.scatter([p[key] / scale for p in pts], [p["metric"] for p in pts], s=12,
                   c=["tab:green" if p["feasible"] else "tab:gray" for p in pts],
                   label="evaluated (green: meets the floor)")
        if key == "energy_pJ":
            front = tune["front"]
            ax.step([p[key] / scale for p in front], [p["metric"] for p in front], "k-",
                    where="post", lw=1, label="Pareto front")
        ax.axhline(tune["floor"], color="tab:red", ls="--", lw=1, label="floor")
        ax.scatter([tune["chosen"][key] / scale], [tune["chosen"]["metric"]], marker="*",
                   s=160, c="tab:red", label="tuned", zorder=3)
        ax.scatter([tune["untuned"][key] / scale], [tune["untuned"]["metric"]], marker="s",
                   s=50, c="tab:blue", label="untuned preset", zorder=3)
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
    a.legend(fontsize=7)
    return _save(fig)


def _img(png: bytes) -> str:
    return f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _figure(width=10, height=3.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 2, figsize=(width, height))


def _save(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    with warnings.catch_warnings():  # a name the font cannot draw shows as boxes, not stderr
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def plain_text(name: str) -> str:
    """A name as matplotlib draws it literally: every ``$`` escaped, so no mathtext parse."""
    return str(name).replace("$", r"\$")


def _layer_names(report: dict) -> list[str]:
    return [plain_text(layer["name"]) for layer in report["layers"]]


def _plot_sparsity_energy(report: dict, preset: str) -> bytes:
    fig, (a, b) = _figure()
    names = _layer_names(report)
    x = range(len(names))
    a.bar([i - 0.2 for i in x], [layer["sparsity"]["count_zero"] for layer in report["layers"]],
          0.4, label="count zero")
    a.bar([i + 0.2 for i in x], [layer["sparsity"]["spike_slot"] for layer in report["layers"]],
          0.4, label="spike slot")
    a.set_xticks(list(x), names, rotation=60, fontsize=7)
    a.set_ylabel("sparsity")
    a.legend()
    b.bar(x, [_layer_energy(layer, report, preset) / 1e3 for layer in report["layers"]])
    b.set_xticks(list(x), names, rotation=60, fontsize=7)
    b.set_ylabel(f"spiking energy, nJ ({plain_text(preset)})")
    return _save(fig)


def _plot_fidelity(report: dict) -> bytes:
    fig, (a, b) = _figure()
    names = _layer_names(report)
    x = list(range(len(names)))
    a.plot(x, [layer["fidelity"]["encode"]["cosine"] for layer in report["layers"]], "o-",
           label="encode (x_hat vs x)")
    a.plot(x, [layer["fidelity"]["output"]["cosine"] for layer in report["layers"]], "s-",
           label="output vs float, upstream spiked")
    if all("isolated" in layer["fidelity"] for layer in report["layers"]):
        a.plot(x, [layer["fidelity"]["isolated"]["cosine"] for layer in report["layers"]], "^-",
               label="output vs float, layer alone spiked")
    a.set_ylabel("cosine")
    a.set_xticks(x, names, rotation=60, fontsize=7)
    a.legend()
    if all("contribution" in layer for layer in report["layers"]):
        b.bar(x, [layer["contribution"]["recovered_cosine"] for layer in report["layers"]])
        b.set_ylabel("end-to-end cosine recovered\nkeeping the layer float")
    else:
        b.plot(x, [layer["fidelity"]["output"]["snr_db"] or 0 for layer in report["layers"]],
               "s-")
        b.set_ylabel("output SNR, dB")
    b.set_xticks(x, names, rotation=60, fontsize=7)
    return _save(fig)


def _plot_histograms(report: dict) -> bytes:
    fig, (a, b) = _figure()
    for ax, layer in zip((a, b), report["layers"][:1] + report["layers"][-1:]):
        h = layer["count_histogram"]
        r = h["range"]
        ax.bar(range(-r - 1, r + 2), h["counts"])
        ax.set_title(f"{plain_text(layer['name'])} (edges: overflow)", fontsize=9)
        ax.set_xlabel("count")
    return _save(fig)


def _plot_raster(report: dict) -> bytes:
    import numpy as np

    from sbcompile.ir.codings import expand

    coding = report["config"]["coding"]
    fig, axes = _figure()
    for ax, layer in zip(axes, report["layers"][:2]):
        counts = np.asarray(layer["raster_first_sample"])
        ev = expand(counts, coding).astype(float)
        if ev.shape[0] == 0:  # an all-zero sample: one silent step
            ev = np.zeros((1, counts.size))
        ax.imshow(ev, aspect="auto", cmap="bwr", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xlabel("channel (conv: flattened C x H x W)")
        ax.set_ylabel("step t (LSB first)")
        ax.set_title(f"{plain_text(layer['name'])} ({plain_text(coding)})", fontsize=9)
    return _save(fig)
