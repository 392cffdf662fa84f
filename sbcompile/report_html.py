"""The HTML report: one self-contained page (PNG plots as data URIs, a few lines of script to sort
the layer table).

Order: the summary screen (fidelity, sparsity in its named forms, energy by basis with the chip
model's figure, latency, chip mapping), then the per-layer table, plots that stay readable at
100+ layers (curves over the layer index, bars for the top layers only), tuning, and the
configuration last. Every energy figure names its basis and says it is an estimate."""
from __future__ import annotations

import base64
import html
import io
import warnings

from sbcompile.report import change_words, energy_rows, fidelity_summary, fmt, layer_energy

LABELLED_LAYERS = 30  # above this many layers, plots show curves over the index and the top ones
TOP_LAYERS = 20

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em 2em;max-width:1400px;color:#222}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em}
.lede{color:#555;margin:.2em 0 .8em}
.cards{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;background:#fafafa}
.card h3{font-size:.95em;margin:.1em 0 .4em;color:#444;text-transform:uppercase;
letter-spacing:.04em}
.big{font-size:1.6em;font-weight:600}.muted{color:#666;font-size:.85em}
.wide{grid-column:span 3}
table{border-collapse:collapse;font-size:.88em}
td,th{border:1px solid #ddd;padding:2px 7px;text-align:right}
th{background:#eee}
td.name,th.name{text-align:left;overflow-wrap:anywhere;min-width:11em;max-width:28em}
td.op{text-align:left;white-space:nowrap}
td.note{text-align:left;max-width:46em;font-size:.8em;color:#444}
table.sortable th{cursor:pointer;position:sticky;top:0}
.estimate{background:#fff3cd;border-radius:3px;padding:0 4px;font-size:.8em}
img{max-width:100%}.scroll{overflow-x:auto}
"""
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.onclick = () => {
  const body = th.closest('table').tBodies[0];
  const up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
  const key = r => { const c = r.cells[col]; const v = c.dataset.v ?? c.textContent;
                     return isNaN(parseFloat(v)) ? v : parseFloat(v); };
  const order = (a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1);
  [...body.rows].sort(order).forEach(r => body.appendChild(r));
});
"""


def render_html(report: dict, energy_preset: str = "spikingbrain") -> str:
    """The whole page for ``report`` (report.json's structure)."""
    title = html.escape(f"sbcompile report: {report['model']['name']}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{STYLE}</style></head><body><h1>{title}</h1>"]
    if not report.get("measured"):
        parts.append(f"<p>{html.escape(report.get('note', ''))}</p>")
    else:
        parts += [_summary_html(report, energy_preset), _layers_html(report, energy_preset),
                  "<h2>Sparsity and energy per layer</h2>",
                  _img(_plot_sparsity_energy(report, energy_preset)),
                  "<h2>Fidelity per layer</h2>", _img(_plot_fidelity(report)),
                  "<h2>Count histograms</h2>", _img(_plot_histograms(report)),
                  "<h2>Spike raster (first sample: first token, or conv input map; first "
                  "layers)</h2>", _img(_plot_raster(report))]
        if report.get("tune"):
            parts += [_tune_html(report["tune"]), _img(_plot_pareto(report["tune"]))]
    parts += [_config_html(report), f"<script>{SORT_SCRIPT}</script></body></html>"]
    return "".join(parts)


# ---- summary screen -----------------------------------------------------------------------------
def _summary_html(report: dict, preset: str) -> str:
    model = report["model"]
    tot = report["totals"]["sparsity"]
    cfg = report["config"]
    lede = (f"{model['parameters']:,} parameters, {report['totals']['layers_spiked']} spiked "
            f"layers; preset {cfg['preset']}, coding {tot['coding']} (T={tot['T']}, "
            f"{tot['t_mode']}); measured on {report.get('calibration_samples', '?')} "
            "calibration samples")
    cards = [_card("Fidelity to float", _fidelity_body(report)),
             _card("Sparsity", _sparsity_body(tot)),
             _card("Latency and chip mapping", _chip_body(report)),
             _card("Energy per inference by basis <span class='estimate'>estimates</span>",
                   _energy_body(report), wide=True)]
    if report.get("neurobench"):
        cards.append(_card("NeuroBench metrics", _neurobench_body(report["neurobench"]),
                           wide=True))
    return (f"<section id='summary'><p class='lede'>{html.escape(lede)}</p>"
            f"<div class='cards'>{''.join(cards)}</div></section>")


def _card(title: str, body: str, wide: bool = False) -> str:
    return f"<div class='card{' wide' if wide else ''}'><h3>{title}</h3>{body}</div>"


def _fidelity_body(report: dict) -> str:
    rows = []
    for out, f in report["outputs_fidelity"].items():
        task = (f"argmax agreement {f['argmax_agreement']:.1%}, " if "argmax_agreement" in f
                else "")
        rows.append(f"<div><span class='big'>{f['cosine']:.4f}</span> cosine "
                    f"<span class='muted'>{html.escape(out)}: {task}SNR {fmt(f['snr_db'])} dB"
                    "</span></div>")
    tune = report.get("tune")
    if tune:
        rows.append(f"<div class='muted'>task metric {html.escape(tune['metric'])}: "
                    f"{tune['chosen']['metric']:.4f} (floor {tune['floor']:g})</div>")
    fid = report["totals"].get("fidelity", {})
    if fid.get("worst_layer"):
        rows.append(f"<div class='muted'>worst layer: {html.escape(fid['worst_layer'])} "
                    f"(by {html.escape(fid.get('worst_by', 'output cosine'))})</div>")
    return "".join(rows)


def _sparsity_body(tot: dict) -> str:
    return (f"<div><span class='big'>{tot['spike_slot']:.1%}</span> spike-slot sparsity "
            f"<span class='muted'>1 - events / (T N), T={tot['T']}</span></div>"
            f"<table><tr><th class='name'>count-zero (zero counts)</th>"
            f"<td>{tot['count_zero']:.1%}</td></tr>"
            f"<tr><th class='name'>spike-slot, window {tot['window']}</th>"
            f"<td>{tot['spike_slot_window3']:.1%}</td></tr>"
            f"<tr><th class='name'>spikes per channel</th>"
            f"<td>{tot['mean_spikes_per_channel']:.3f}</td></tr>"
            f"<tr><th class='name'>silent channels</th><td>{tot['silent_channels']:.1%}</td>"
            f"</tr></table><div class='muted'>coding {html.escape(tot['coding'])}</div>")


def _chip_body(report: dict) -> str:
    chip = report.get("chip", {})
    sim, mapped = chip.get("sanafe"), chip.get("mapping")
    parts = []
    if sim:
        parts.append(f"<div><span class='big'>{sim['latency_ms']:,.4g} ms</span> per inference "
                     f"<span class='estimate'>estimate</span></div><div class='muted'>"
                     f"{sim['steps']:g} time steps on SANA-FE's "
                     f"<span title='{html.escape(sim['arch'])}'>"
                     f"{html.escape(sim['arch'].split(':')[0])}</span> ({sim['cores']} cores), "
                     f"spike layers one after another; {sim['samples']} inferences simulated"
                     "</div>")
    else:
        parts.append("<div class='muted'>latency not simulated: <code>sbcompile report "
                     "ARTIFACT --chip loihi --input X.npz</code></div>")
    if mapped:
        memory = mapped.get("synapse_memory_bytes", mapped["synapses"])  # int8: a byte each
        parts.append(f"<table><tr><th class='name'>neuro-cores (Loihi 2 mapping)</th>"
                     f"<td>{mapped['neuro_cores']:,}</td></tr><tr><th class='name'>chips</th>"
                     f"<td>{mapped['chips']}</td></tr><tr><th class='name'>synapses</th>"
                     f"<td>{mapped['synapses']:,}</td></tr><tr><th class='name'>synapse memory"
                     f"</th><td>{memory / 1e6:,.2f} MB "
                     f"<span class='muted'>(weights once: "
                     f"{mapped.get('shared_weight_bytes', 0) / 1e6:,.2f} MB)</span></td></tr>"
                     f"<tr><th class='name'>widest spike message</th>"
                     f"<td>{mapped.get('message_bits', '-')} bits</td></tr>"
                     f"<tr><th class='name'>processes on embedded CPUs</th>"
                     f"<td>{mapped['embedded_processes']}</td></tr></table>")
    return "".join(parts)


def _energy_body(report: dict) -> str:
    rows = []
    for r in energy_rows(report):
        chip = r["kind"] == "chip model"
        dense = "" if chip else f"{r['dense_fp16_uJ']:,.4g}"
        versus = "" if chip else change_words(r["vs_fp16"])
        note = html.escape(r["why"] or r["convention"])
        rows.append(f"<tr><td class='name'><b>{html.escape(r['basis'])}</b></td>"
                    f"<td class='name'>{r['kind']}</td><td>{r['spiking_uJ']:,.4g}</td>"
                    f"<td>{dense}</td><td>{versus}</td>"
                    f"<td class='note'>{'<b>why:</b> ' if r['why'] else ''}{note}</td></tr>")
    return ("<table><tr><th class='name'>basis</th><th class='name'>method</th>"
            "<th>spiking uJ</th><th>dense FP16 uJ</th><th>vs dense FP16</th>"
            "<th class='name'>what it counts</th></tr>" + "".join(rows) + "</table>"
            "<div class='muted'>Every figure is an estimate on the named basis: op-count presets "
            "price the calibration run's operations; the chip model simulates the spike layers "
            "on a model of the chip. None is a measurement on silicon.</div>")


def _neurobench_body(nb: dict) -> str:
    m = nb["metrics"]
    ops = m["SynapticOperations"]
    cells = [("Footprint (bytes)", f"{m['Footprint']:,}"),
             ("ConnectionSparsity", f"{m['ConnectionSparsity']:.4f}"),
             ("ActivationSparsity", f"{m['ActivationSparsity']:.4f}"),
             ("SynapticOperations: Effective_MACs", f"{ops['Effective_MACs']:,.0f}"),
             ("Effective_ACs", f"{ops['Effective_ACs']:,.0f}"), ("Dense", f"{ops['Dense']:,.0f}")]
    return ("<table><tr>" + "".join(f"<th>{k}</th>" for k, _ in cells) + "</tr><tr>"
            + "".join(f"<td>{v}</td>" for _, v in cells) + "</tr></table>"
            f"<div class='muted'>per sample over {nb['samples']} samples, neurobench "
            f"{html.escape(nb['neurobench_version'])}; {html.escape(nb['basis'])}</div>")


# ---- layer table --------------------------------------------------------------------------------
def _layers_html(report: dict, preset: str) -> str:
    columns = ["#", "layer", "op", "fan in", "fan out", "count zero", "spike slot", "window",
               "spikes/ch", "silent ch", "T", "T max", "cos enc", "cos isolated", "cos out",
               "own error", "recovers", "SNR out dB", f"pJ ({preset})"]
    chip = report.get("chip", {}).get("sanafe", {}).get("layers", {})
    if chip:
        columns.append("SANA-FE nJ")
    head = "".join(f"<th class='name'>{c}</th>" if c == "layer" else f"<th>{html.escape(c)}</th>"
                   for c in columns)
    rows = []
    for i, layer in enumerate(report["layers"]):
        s, fid = layer["sparsity"], layer["fidelity"]
        energy = layer_energy(layer, report, preset)
        cells = [(i, str(i)), (None, layer["name"]), (None, layer["op"]),
                 (layer["fan_in"], str(layer["fan_in"])), (layer["fan_out"], str(layer["fan_out"])),
                 _pct(s["count_zero"]), _pct(s["spike_slot"]), _pct(s["spike_slot_window3"]),
                 (s["mean_spikes_per_channel"], f"{s['mean_spikes_per_channel']:.3f}"),
                 _pct(s["silent_channels"]), (s["T"], fmt(s["T"])),
                 (s.get("T_max"), fmt(s.get("T_max"))), _cos(fid.get("encode")),
                 _cos(fid.get("isolated")), _cos(fid.get("output")),
                 (fid.get("introduced_share"), f"{fid['introduced_share']:.0%}"
                  if "introduced_share" in fid else ""),
                 (layer.get("contribution", {}).get("recovered_cosine"),
                  f"{layer['contribution']['recovered_cosine']:+.4f}"
                  if "contribution" in layer else ""),
                 (fid["output"]["snr_db"], fmt(fid["output"]["snr_db"])),
                 (energy, f"{energy:,.0f}")]
        if chip:
            sim = chip.get(layer["name"], {}).get("energy_uJ")
            cells.append((sim, "" if sim is None else f"{sim * 1e3:,.1f}"))
        rows.append("<tr>" + "".join(
            f"<td class='{'name' if k == 1 else 'op'}'>{html.escape(text)}</td>"
            if value is None and k in (1, 2) else
            f"<td data-v='{'' if value is None else value}'>{html.escape(text)}</td>"
            for k, (value, text) in enumerate(cells)) + "</tr>")
    tot = report["totals"]["sparsity"]
    foot = (f"<tr><td></td><td class='name'><b>TOTAL</b></td><td colspan=3></td>"
            f"<td>{tot['count_zero']:.1%}</td><td>{tot['spike_slot']:.1%}</td>"
            f"<td>{tot['spike_slot_window3']:.1%}</td><td>{tot['mean_spikes_per_channel']:.3f}"
            f"</td><td>{tot['silent_channels']:.1%}</td><td>{fmt(tot['T'])}</td>"
            f"<td colspan={len(columns) - 11}></td></tr>")
    return (f"<h2>Layers ({len(report['layers'])}; click a heading to sort)</h2><p>Coding: "
            f"{html.escape(tot['coding'])}. Sparsity: count zero = zero counts; spike slot = 1 -"
            " events/(T N); window = 1 - events/(window N). "
            + html.escape(fidelity_summary(report)) + "</p><div class='scroll'>"
            "<table class='sortable'><thead><tr>" + head + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody><tfoot>" + foot + "</tfoot></table></div>")


def _pct(x: float) -> tuple:
    return (x, f"{x:.1%}")


def _cos(f: dict | None) -> tuple:
    return (f["cosine"], f"{f['cosine']:.4f}") if f else (None, "")


def _config_html(report: dict) -> str:
    rows = "".join(f"<tr><th class='name'>{html.escape(k)}</th><td class='note'>"
                   f"{html.escape(str(v))}</td></tr>" for k, v in report["config"].items())
    return f"<h2>Configuration</h2><table>{rows}</table>"


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
            f"{html.escape(tune['energy_preset'])} (an estimate).</p><table><tr><th></th>"
            f"<th>{html.escape(tune['metric'])}</th><th>energy nJ</th><th>sparsity</th></tr>"
            f"{rows}</table><h3>Chosen per-layer settings</h3><table>{settings}</table>"
            "<h3>Pareto front: fidelity vs energy</h3>")


# ---- plots --------------------------------------------------------------------------------------
def _plot_pareto(tune: dict) -> bytes:
    """Every configuration the search measured, its non-dominated front, the floor, the chosen
    settings and the untuned preset."""
    fig, (a, b) = _figure()
    metric = plain_text(tune["metric"])
    for ax, key, label in ((a, "energy_pJ", "energy per inference, nJ (estimate)"),
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


def _figure(width=12, height=4):
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


def short_name(name: str, width: int = 28) -> str:
    """A layer name for an axis label: at most ``width`` characters, the middle elided."""
    from sbcompile.report import elide_middle

    return plain_text(elide_middle(str(name), width))


def _index_axis(ax, report: dict) -> None:
    """Layer names under each tick for a few layers; the layer index (the table's #) beyond."""
    n = len(report["layers"])
    if n <= LABELLED_LAYERS:
        ax.set_xticks(range(n), [short_name(layer["name"]) for layer in report["layers"]],
                      rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xlabel("layer # (see the layer table)")


def _top_bars(ax, report: dict, values: list[float], label: str) -> None:
    """Horizontal bars of the largest values, named: all layers when few, else the top ones."""
    order = sorted(range(len(values)), key=lambda i: -values[i])[:TOP_LAYERS]
    names = [f"#{i} {short_name(report['layers'][i]['name'])}" for i in order]
    ax.barh(range(len(order)), [values[i] for i in order])
    ax.set_yticks(range(len(order)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    if len(order) < len(values):
        ax.set_title(f"top {len(order)} of {len(values)} layers", fontsize=9)


def _plot_sparsity_energy(report: dict, preset: str) -> bytes:
    fig, (a, b) = _figure()
    layers = report["layers"]
    x = range(len(layers))
    a.plot(x, [layer["sparsity"]["count_zero"] for layer in layers], ".-", label="count zero")
    a.plot(x, [layer["sparsity"]["spike_slot"] for layer in layers], ".-", label="spike slot")
    a.set_ylabel("sparsity")
    a.set_ylim(0, 1)
    a.legend()
    _index_axis(a, report)
    _top_bars(b, report, [layer_energy(layer, report, preset) / 1e3 for layer in layers],
              f"spiking energy, nJ per inference (estimate, {plain_text(preset)})")
    return _save(fig)


def _plot_fidelity(report: dict) -> bytes:
    fig, (a, b) = _figure()
    layers = report["layers"]
    x = list(range(len(layers)))
    a.plot(x, [layer["fidelity"]["encode"]["cosine"] for layer in layers], ".-",
           label="encode (x_hat vs x)")
    a.plot(x, [layer["fidelity"]["output"]["cosine"] for layer in layers], ".-",
           label="output vs float, upstream spiked")
    if all("isolated" in layer["fidelity"] for layer in layers):
        a.plot(x, [layer["fidelity"]["isolated"]["cosine"] for layer in layers], ".-",
               label="output vs float, layer alone spiked")
    a.set_ylabel("cosine")
    a.legend(fontsize=8)
    _index_axis(a, report)
    if all("contribution" in layer for layer in layers):
        _top_bars(b, report, [layer["contribution"]["recovered_cosine"] for layer in layers],
                  "end-to-end cosine recovered keeping the layer float")
    else:
        _top_bars(b, report, [1 - layer["fidelity"]["output"]["cosine"] for layer in layers],
                  "1 - output cosine (error at the layer's output)")
    return _save(fig)


def _plot_histograms(report: dict) -> bytes:
    fig, (a, b) = _figure()
    for ax, layer in zip((a, b), report["layers"][:1] + report["layers"][-1:]):
        h = layer["count_histogram"]
        r = h["range"]
        ax.bar(range(-r - 1, r + 2), h["counts"])
        ax.set_title(f"{short_name(layer['name'], 48)} (edges: overflow)", fontsize=9)
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
        ax.set_title(f"{short_name(layer['name'], 48)} ({plain_text(coding)})", fontsize=9)
    return _save(fig)
