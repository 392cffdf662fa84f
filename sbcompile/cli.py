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


@main.command()
@click.argument("model")
@guarded
def inspect(model: str) -> None:
    """Op table, shapes and parameter count of MODEL (.onnx)."""
    from sbcompile.pipeline import load_model
    from sbcompile.report import model_summary

    graph = load_model(_model_path(model))
    summary = model_summary(graph)
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
@click.option("-o", "--output", required=True, help="Artifact to write (.sbc).")
@guarded
def compile(model: str, calib: str | None, preset: str, sets: tuple, exclude: tuple,
            output: str) -> None:
    """Compile MODEL (.onnx, or .nir for the NIR primitives sbcompile reads) into a spiking
    artifact."""
    from sbcompile.config import make_config, parse_set_options
    from sbcompile.npz import load_npz
    from sbcompile.pipeline import compile_graph, load_model
    from sbcompile.report import print_terminal

    config = make_config(preset, parse_set_options(list(sets)), list(exclude))
    graph = load_model(_model_path(model))
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
@click.option("--target", type=click.Choice(["reference", "lava", "triton"]), default="reference",
              show_default=True)
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
    if result.op_counts and model.report.get("measured"):
        _print_op_counts(result.op_counts, model.report, len(next(iter(feeds.values()))))
    if output:
        save_npz(output, result.outputs)
        console.print(f"wrote {output}")


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
