"""The `sbcompile` command line (DESIGN.md): inspect, check, compile, report, run, export, demo.

Errors a user can act on print one line `error: ...` on stderr and exit 2; anything else is a bug
(exit 1). `--debug` shows the traceback.
"""
from __future__ import annotations

import functools
import json
import logging
import sys
import traceback
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sbcompile.errors import SbcError

console = Console()
err_console = Console(stderr=True)


def guarded(fn):
    """Turn SbcError into `error: ...` + exit 2, other exceptions into exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, debug: bool = False, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SbcError as e:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug in sbcompile
            if debug:
                traceback.print_exc()
            click.echo(f"internal error: {type(e).__name__}: {e} (rerun with --debug)", err=True)
            sys.exit(1)
    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


@click.group()
@click.version_option(package_name="sbcompile")
@click.option("-v", "--verbose", is_flag=True, help="Log each stage and its time on stderr.")
def main(verbose: bool) -> None:
    """sbcompile: compile models into SpikingBrain-style spiking form."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(name)s: %(message)s")


def _model_path(model: str) -> Path:
    path = Path(model)
    if not path.is_file():
        raise SbcError(f"{model}: no such file")
    return path


def parse_input_shapes(items: tuple | list) -> dict[str, list]:
    """``NAME=DIMS`` items (DIMS comma-separated; -1 or a name keeps a dim dynamic, so
    ``x=-1,3,48,320`` pins all but the batch) as {name: [dims]}."""
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        parts = [p.strip() for p in dims.split(",")]
        if not sep or not name.strip() or not all(parts):
            raise SbcError(f"--input-shape '{item}': expected NAME=D0,D1,... (e.g. x=1,3,48,320)")
        dims_out = [int(p) if p.lstrip("-").isdigit() else p for p in parts]
        if any(isinstance(d, int) and d < 1 and d != -1 for d in dims_out):
            raise SbcError(f"--input-shape '{item}': dims must be >= 1, or -1 or a name for a "
                           "dynamic dim")
        shapes[name.strip()] = [f"{name.strip()}_dim{i}" if d == -1 else d
                                for i, d in enumerate(dims_out)]
    return shapes


INPUT_SHAPE = click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
                           help="Pin an input's dims, e.g. x=1,3,48,320 (a name keeps a dim "
                                "dynamic).")


@main.command()
@click.argument("model")
@INPUT_SHAPE
@guarded
def inspect(model: str, input_shapes: tuple) -> None:
    """The whole op table of MODEL (.onnx) with what is supported and why not, shapes and the
    parameter count; exit 2 when any node is unsupported."""
    if str(model).endswith(".nir"):
        return _inspect_graph(model)
    from sbcompile.frontends.onnx_frontend import inspect_onnx

    info = inspect_onnx(str(_model_path(model)), parse_input_shapes(input_shapes))
    rows = info["rows"]
    console.print(f"[bold]{info['name']}[/]: {len(rows)} ONNX nodes, "
                  f"{info['parameters']:,} parameters")
    for kind in ("inputs", "outputs"):
        for name, (shape, dtype) in info[kind].items():
            console.print(f"  {kind[:-1]} {name}: {dtype}{shape}")
    by_op: dict[str, list[dict]] = {}
    for r in rows:
        by_op.setdefault(r["op_type"], []).append(r)
    t = Table("ONNX op", "nodes", "supported", "IR ops", "why not", show_edge=False)
    for op, group in sorted(by_op.items()):
        bad = [r for r in group if r["status"] != "supported"]
        reasons = sorted({r["reason"] for r in bad})
        ir_ops = sorted({o for r in group for o in r["ir_ops"]})
        t.add_row(op, str(len(group)), "yes" if not bad else
                  "[red]no[/]" if len(bad) == len(group) else f"[red]{len(bad)} not[/]",
                  ",".join(ir_ops), "[red]" + "; ".join(reasons) + "[/]" if reasons else "")
    console.print(t)
    if info["ir_ops"] is not None:
        console.print("IR ops: " + ", ".join(f"{op} {n}" for op, n in info["ir_ops"].items()))
    bad = [r for r in rows if r["status"] != "supported"]
    if bad:
        ops = sorted({r["op_type"] for r in bad})
        raise SbcError(f"{model}: {len(bad)} of {len(rows)} nodes unsupported (op types: "
                       f"{', '.join(ops)})")


def _inspect_graph(model: str) -> None:
    from sbcompile.pipeline import load_model
    from sbcompile.report import model_summary

    summary = model_summary(load_model(_model_path(model)))
    console.print(f"[bold]{summary['name']}[/]: {summary['nodes']} IR nodes, "
                  f"{summary['parameters']:,} parameters")
    for kind in ("inputs", "outputs"):
        for name, v in summary[kind].items():
            console.print(f"  {kind[:-1]} {name}: {v['dtype']}{v['shape']}")
    t = Table("IR op", "count", show_edge=False)
    for op, count in summary["ops"].items():
        t.add_row(op, str(count))
    console.print(t)


@main.command()
@click.argument("model")
@click.option("--preset", default="spikingbrain", show_default=True)
@guarded
def check(model: str, preset: str) -> None:
    """Which nodes of MODEL are supported and which get spiked; exit 2 if any is unsupported."""
    from sbcompile.config import make_config
    from sbcompile.frontends.onnx_frontend import lower_with_support
    from sbcompile.passes.targets import spike_targets

    config = make_config(preset)
    rows, graph = lower_with_support(str(_model_path(model)))
    unsupported = [r for r in rows if r["status"] != "supported"]
    spiked: set[str] = set()
    if graph is not None and config.spike:
        spiked = {n.name for n, _ in spike_targets(graph, config)}
    t = Table("node", "ONNX op", "status", "IR", "spiked", show_edge=False)
    for r in rows:
        ir_ops = r.get("ir_ops") or []
        is_spiked = r["name"] in spiked or any(n in spiked for n in r.get("ir_nodes", []))
        t.add_row(r["name"], r["op_type"], r["status"] if r["status"] == "supported"
                  else f"[red]{r['status']}: {r.get('reason', '')}[/]",
                  ",".join(ir_ops), "yes" if is_spiked else "")
    console.print(t)
    console.print(f"{len(rows) - len(unsupported)}/{len(rows)} nodes supported, "
                  f"{len(spiked)} layers spiked under preset {preset}")
    if unsupported:
        first = unsupported[0]
        raise SbcError(f"{model}: {len(unsupported)} unsupported node(s), first '{first['name']}'"
                       f" ({first['op_type']})")


@main.command()
@click.argument("model")
@click.option("--calib", type=str, default=None, help="Calibration inputs (.npz).")
@click.option("--preset", default="spikingbrain", show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a field.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="Keep matching layers float.")
@INPUT_SHAPE
@click.option("-o", "--output", required=True, help="Artifact to write (.sbc).")
@guarded
def compile(model: str, calib: str | None, preset: str, sets: tuple, exclude: tuple,
            input_shapes: tuple, output: str) -> None:
    """Compile MODEL (.onnx, or .nir for the NIR primitives sbcompile reads) into a spiking
    artifact."""
    from sbcompile.config import make_config, parse_set_options
    from sbcompile.npz import load_npz
    from sbcompile.pipeline import compile_graph, load_model
    from sbcompile.report import print_terminal

    config = make_config(preset, parse_set_options(list(sets)), list(exclude))
    graph = load_model(_model_path(model), parse_input_shapes(input_shapes) or None)
    calib_data = load_npz(calib) if calib else None
    out = Path(output)
    if not out.parent.exists():
        raise SbcError(f"{output}: folder {out.parent} does not exist")
    artifact = compile_graph(graph, config, calib_data)
    artifact.save(out)
    print_terminal(artifact.report, console=console)
    console.print(f"wrote {out}")


@main.command()
@click.argument("artifact")
@click.option("--json", "json_out", default=None, help="Write report.json here.")
@click.option("--html", "html_out", default=None, help="Write the HTML report here.")
@click.option("--energy-preset", default="spikingbrain", show_default=True)
@guarded
def report(artifact: str, json_out: str | None, html_out: str | None, energy_preset: str) -> None:
    """Show the report of a compiled ARTIFACT; write it as JSON and/or HTML."""
    from sbcompile.artifact import Artifact, write_atomic
    from sbcompile.report import print_terminal, render_html

    art = Artifact.load(artifact)
    rep = art.report
    if rep.get("measured") and energy_preset not in rep["energy"]:
        raise SbcError(f"unknown energy preset '{energy_preset}' (known: "
                       f"{', '.join(rep['energy'])})")
    print_terminal(rep, energy_preset, console=console)
    if json_out:
        data = json.dumps(rep, indent=1).encode()
        write_atomic(Path(json_out), lambda f: f.write(data))
        console.print(f"wrote {json_out}")
    if html_out:
        page = render_html(rep, energy_preset).encode()
        write_atomic(Path(html_out), lambda f: f.write(page))
        console.print(f"wrote {html_out}")


@main.command()
@click.argument("artifact")
@click.option("--input", "input_path", required=True, help="Inputs (.npz, keyed by input name).")
@click.option("--target", type=click.Choice(["reference", "lava", "triton", "onnxruntime"]),
              default="reference", show_default=True,
              help="onnxruntime: the QDQ export in batches, for evaluating a data set fast.")
@click.option("--float", "use_float", is_flag=True, help="Run the un-spiked baseline graph.")
@click.option("--interpret", is_flag=True, default=None,
              help="Triton target: run the kernels on Triton's CPU interpreter (no GPU); "
                   "TRITON_INTERPRET=1 does the same.")
@click.option("--timeout", default=120.0, show_default=True,
              help="Lava target: seconds the simulation may take.")
@click.option("-o", "--output", default=None, help="Write outputs (.npz).")
@guarded
def run(artifact: str, input_path: str, target: str, use_float: bool, interpret: bool | None,
        timeout: float, output: str | None) -> None:
    """Run a compiled ARTIFACT on inputs."""
    from sbcompile.api import load
    from sbcompile.npz import load_npz, save_npz

    model = load(artifact)
    feeds = load_npz(input_path)
    result = model.run(feeds, target, use_float=use_float, interpret=interpret or None,
                       timeout=timeout)
    for name, arr in result.outputs.items():
        console.print(f"{name}: {arr.dtype}{list(arr.shape)}  mean {float(arr.mean()):.6g}")
    if not use_float and model.graph.meta.get("count_bounds"):
        _print_saturations(model.graph, feeds)
    if result.op_counts and model.report.get("measured"):
        _print_op_counts(result.op_counts, model.report, len(next(iter(feeds.values()))))
    if output:
        save_npz(output, result.outputs)
        console.print(f"wrote {output}")


def _print_saturations(graph, feeds: dict) -> None:
    """Counts these inputs drove past the bounds measured at compile time (they saturate)."""
    from sbcompile.passes.count_bounds import saturations

    sat = saturations(graph, feeds)
    clipped = sum(s["saturated"] for s in sat.values())
    total = sum(s["counts"] for s in sat.values())
    worst = max(sat, key=lambda n: sat[n]["saturated"])
    console.print(f"saturated counts: {clipped:,} of {total:,} beyond the measured bounds"
                  + (f" (most in '{worst}', bound {sat[worst]['bound']})" if clipped else ""))


def _print_op_counts(op_counts: dict, report: dict, samples: int) -> None:
    """Op counts measured on the simulated chip beside the compile-time estimate."""
    from sbcompile.report import simulated_vs_compiled

    t = Table("layer", "synaptic ops sim / est", "spike messages sim / est",
              "neuron updates sim / est", show_edge=False,
              title=f"simulated vs compile-time estimate (calibration average x {samples})")
    for row in simulated_vs_compiled(op_counts, report, samples):
        t.add_row(row["layer"], *(f"{row[k]['simulated']:,} / {row[k]['compile_time']:,}"
                                  for k in ("synaptic_ops", "spike_messages",
                                            "neuron_updates")))
    console.print(t)


@main.command()
@click.argument("artifact")
@click.option("--format", "fmt", type=click.Choice(["nir", "netx", "onnx-qdq"]), required=True)
@click.option("-o", "--output", required=True, help="File to write.")
@click.option("--allow-partial", is_flag=True,
              help="Export the expressible prefix instead of refusing the model.")
@guarded
def export(artifact: str, fmt: str, output: str, allow_partial: bool) -> None:
    """Export a compiled ARTIFACT as NIR, lava-dl netx or ONNX QDQ."""
    from sbcompile.backends.export import export as export_artifact

    result = export_artifact(artifact, fmt, output, allow_partial)
    for note in result["notes"]:
        console.print(f"note: {note}")
    if result["left_out"]:
        console.print(f"left out {len(result['left_out'])} node(s) from "
                      f"'{result['left_out'][0]}' on")
    console.print(f"wrote {output}")


@main.command()
@click.option("--preset", default="spikingbrain", show_default=True)
@click.option("--out", "out_dir", default="out", show_default=True,
              help="Folder for the artifact and reports.")
@guarded
def demo(preset: str, out_dir: str) -> None:
    """The whole path on the bundled digits CNN."""
    from sbcompile.demo import run_demo

    run_demo(preset, Path(out_dir), console)


if __name__ == "__main__":
    main()
