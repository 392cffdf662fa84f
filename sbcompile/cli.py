"""The `sbcompile` command line (DESIGN.md): inspect, check, compile, report, run, export, demo.

Errors a user can act on print one line `error: ...` on stderr and exit 2; anything else is a bug
(exit 1). `--debug` shows the traceback.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import signal
import sys
import traceback
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sbcompile.config import CHOICES
from sbcompile.errors import SbcError
from sbcompile.output_path import check_output_dir, check_output_path
from sbcompile.target_registry import TARGETS

console = Console()
err_console = Console(stderr=True)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived: unwinds like KeyboardInterrupt, so every ``finally`` (the Lava
    runner's group and temp-folder cleanup, write_atomic's temporary file) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def guarded(fn):
    """Turn SbcError into `error: ...` + exit 2, a signal into `error: interrupted` + exit
    128 + signal, other exceptions into exit 1 (a bug)."""
    @functools.wraps(fn)
    def wrapper(*args, debug: bool = False, **kwargs):
        previous = _catch_signals()
        try:
            with warnings.catch_warnings():  # numpy's overflow notes are not one-line errors
                warnings.simplefilter("ignore", RuntimeWarning)
                return fn(*args, **kwargs)
        except SbcError as e:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {_one_line(str(e))}", err=True)
            sys.exit(2)
        except (KeyboardInterrupt, Interrupted) as e:
            signum = getattr(e, "signum", signal.SIGINT)
            click.echo(f"error: interrupted by {signal.Signals(signum).name}", err=True)
            sys.exit(128 + signum)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug in sbcompile
            if debug:
                traceback.print_exc()
            click.echo(f"internal error: {type(e).__name__}: {_one_line(str(e))} (rerun with "
                       "--debug)", err=True)
            sys.exit(1)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return click.option("--debug", is_flag=True, help="Show tracebacks.")(wrapper)


def _catch_signals() -> dict:
    """Route SIGTERM and SIGHUP through Interrupted; returns the handlers to restore (none when
    not on the main thread, where Python cannot set handlers)."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, _raise_interrupted)
        except ValueError:
            break
    return previous


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


class OneLineErrors(click.Group):
    """click's own usage errors (unknown option, missing argument, bad choice) as one line
    `error: ...` and exit 2, like every other bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
            click.echo(f"error: {where}{_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        sys.exit(0)


def _seconds(ctx, param, value):
    """--timeout: a finite number of seconds > 0 (nan, inf, 0 and negatives are refused)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite number of seconds > 0, not {value}")
    return value


@click.group(cls=OneLineErrors)
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
    console.print(f"[bold]{escape(info['name'])}[/]: {len(rows)} ONNX nodes, "
                  f"{info['parameters']:,} parameters")
    for kind in ("inputs", "outputs"):
        for name, (shape, dtype) in info[kind].items():
            console.print(escape(f"  {kind[:-1]} {name}: {dtype}{shape}"))
    by_op: dict[str, list[dict]] = {}
    for r in rows:
        by_op.setdefault(r["op_type"], []).append(r)
    t = Table("ONNX op", "nodes", "supported", "IR ops", "why not", show_edge=False)
    for op, group in sorted(by_op.items()):
        bad = [r for r in group if r["status"] != "supported"]
        reasons = sorted({r["reason"] for r in bad})
        ir_ops = sorted({o for r in group for o in r["ir_ops"]})
        t.add_row(escape(op), str(len(group)), "yes" if not bad else
                  "[red]no[/]" if len(bad) == len(group) else f"[red]{len(bad)} not[/]",
                  escape(",".join(ir_ops)),
                  "[red]" + escape("; ".join(reasons)) + "[/]" if reasons else "")
    console.print(t)
    if info["ir_ops"] is not None:
        console.print(escape("IR ops: " + ", ".join(f"{op} {n}" for op, n in
                                                    info["ir_ops"].items())))
    bad = [r for r in rows if r["status"] != "supported"]
    if bad:
        ops = sorted({r["op_type"] for r in bad})
        raise SbcError(f"{model}: {len(bad)} of {len(rows)} nodes unsupported (op types: "
                       f"{', '.join(ops)})")


def _inspect_graph(model: str) -> None:
    from sbcompile.pipeline import load_model
    from sbcompile.report import model_summary

    summary = model_summary(load_model(_model_path(model)))
    console.print(f"[bold]{escape(summary['name'])}[/]: {summary['nodes']} IR nodes, "
                  f"{summary['parameters']:,} parameters")
    for kind in ("inputs", "outputs"):
        for name, v in summary[kind].items():
            console.print(escape(f"  {kind[:-1]} {name}: {v['dtype']}{v['shape']}"))
    t = Table("IR op", "count", show_edge=False)
    for op, count in summary["ops"].items():
        t.add_row(escape(op), str(count))
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
        t.add_row(escape(r["name"]), escape(r["op_type"]), r["status"]
                  if r["status"] == "supported"
                  else f"[red]{escape(r['status'])}: {escape(r.get('reason', ''))}[/]",
                  escape(",".join(ir_ops)), "yes" if is_spiked else "")
    console.print(t)
    console.print(f"{len(rows) - len(unsupported)}/{len(rows)} nodes supported, "
                  f"{len(spiked)} layers spiked under preset {escape(preset)}")
    for r in [] if unsupported else rows:  # nodes waiting on a pinned one need no note
        if "needs_static" in r and "compile pins it" in r["reason"]:
            console.print(escape(f"note: node '{r['name']}' ({r['op_type']}): {r['reason']}"))
    if unsupported:
        first = unsupported[0]
        raise SbcError(f"{model}: {len(unsupported)} unsupported node(s), first '{first['name']}'"
                       f" ({first['op_type']})")


def build_config(config_file: str | None, preset: str | None, sets: tuple, exclude: tuple):
    """The compile config of the command line: the config file (when given) over its preset,
    or the preset (default spikingbrain); ``--set`` and ``--exclude`` over either."""
    from sbcompile.config import config_from_file, make_config, parse_set_options

    overrides = parse_set_options(list(sets))
    if config_file is not None:
        return config_from_file(config_file, preset, overrides, list(exclude))
    return make_config(preset or "spikingbrain", overrides, list(exclude))


CONFIG_OPTIONS = [
    click.option("--config", "config_file", default=None, metavar="FILE",
                 help="Config file (JSON of config fields, per-layer `layers` too; what `tune` "
                      "writes)."),
    click.option("--preset", default=None,
                 help="Preset [default: the config file's, else spikingbrain]."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a field."),
    click.option("--exclude", multiple=True, metavar="PATTERN",
                 help="Keep matching layers float."),
]


def config_options(fn):
    for option in reversed(CONFIG_OPTIONS):
        fn = option(fn)
    return fn


@main.command()
@click.argument("model")
@click.option("--calib", type=str, default=None, help="Calibration inputs (.npz).")
@config_options
@INPUT_SHAPE
@click.option("-o", "--output", required=True,
              help="Artifact to write (.sbc); for a folder of layers, the folder of layer "
                   "artifacts.")
@click.option("--workers", type=int, default=None, metavar="N",
              help="Folder of layers: compile them on a local Dask cluster of N worker "
                   "processes.")
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="Folder of layers: compile them on the running Dask cluster at ADDRESS "
                   "(e.g. tcp://host:8786; its workers must see -o).")
@guarded
def compile(model: str, calib: str | None, config_file: str | None, preset: str | None,
            sets: tuple, exclude: tuple, input_shapes: tuple, output: str, workers: int | None,
            cluster: str | None) -> None:
    """Compile MODEL (.onnx, or .nir for the NIR primitives sbcompile reads) into a spiking
    artifact. MODEL may be a folder of layer models (one .onnx or .nir a layer, each with one
    input and one output, in name order): they compile layer by layer in bounded memory, on
    the layers' streamed activations (--calib holds the first layer's input), into one
    artifact a layer; --workers or --cluster runs the layers in parallel."""
    from sbcompile.npz import load_npz
    from sbcompile.pipeline import compile_graph, load_model
    from sbcompile.report import print_terminal

    config = build_config(config_file, preset, sets, exclude)
    if Path(model).is_dir():
        return _compile_stack(Path(model), calib, config, parse_input_shapes(input_shapes),
                              output, workers, cluster)
    if workers is not None or cluster is not None:
        raise SbcError(f"{model}: --workers and --cluster compile a folder of layer models, "
                       "not one model file")
    out = check_output_path(output, "-o")
    calib_data = load_npz(calib) if calib else None
    graph = load_model(_model_path(model), parse_input_shapes(input_shapes) or None, calib_data)
    if calib_data is not None:  # fidelity kept by default (README): repaired below the floor
        from sbcompile.config import parse_set_options
        from sbcompile.tune import default_repair

        config = default_repair(config, parse_set_options(list(sets)),
                                bool(config_file or exclude))
    artifact = compile_graph(graph, config, calib_data)
    artifact.save(out)
    print_terminal(artifact.report, console=console)
    if artifact.report.get("tune"):
        from sbcompile.report import print_tune

        print_tune(artifact.report["tune"], console=console)
    console.print(f"wrote {out}")


def _compile_stack(folder: Path, calib: str | None, config, input_shapes: dict, output: str,
                   workers: int | None, cluster: str | None) -> None:
    """Stream-compile a folder of layer models: serially here, or on a Dask cluster."""
    from sbcompile.npz import load_npz
    from sbcompile.pipeline import load_model
    from sbcompile.progress import counter
    from sbcompile.streaming import compile_stream, layer_models

    if workers is not None and cluster is not None:
        raise SbcError("give --workers (a local cluster) or --cluster (a running one), not both")
    files = layer_models(folder)
    if calib is None:
        raise SbcError(f"{folder}: a folder of layers compiles on the layers' own activations; "
                       "--calib must give the first layer's input")
    arrays = load_npz(calib)
    if len(arrays) != 1:
        raise SbcError(f"{calib}: holds {len(arrays)} arrays; a folder of layers takes one, the "
                       "first layer's input")
    acts = next(iter(arrays.values()))
    layers = [functools.partial(load_model, str(f), input_shapes or None) for f in files]
    with contextlib.ExitStack() as stack:
        client = None
        if workers is not None or cluster is not None:
            from sbcompile.distributed import dask_client

            client = stack.enter_context(dask_client(workers, cluster))
        out = check_output_dir(output, "-o")
        step = stack.enter_context(counter(len(layers), "layers compiled"))
        if client is None:
            records = compile_stream(layers, acts, config, out, on_layer=lambda r: step())
        else:
            from sbcompile.distributed import compile_stream_distributed

            records = compile_stream_distributed(layers, acts, config, out, client,
                                                 on_layer=lambda r: step())
    t = Table("layer", "model", "parameters", "int8 MB", "compile s", "count zero",
              show_edge=False)
    for r, f in zip(records, files):
        zero = r["totals"].get("sparsity", {}).get("count_zero")
        t.add_row(str(r["layer"]), escape(f.name), f"{r['params']:,}",
                  f"{r['int8_weight_bytes'] / 1e6:.2f}", f"{r['compile_s']:.1f}",
                  "" if zero is None else f"{zero:.3f}")
    console.print(t)
    console.print(escape(f"wrote {len(records)} layer artifacts to {out}"))


@main.command()
@click.argument("model")
@click.option("--calib", type=str, required=True, help="Calibration inputs (.npz).")
@config_options
@INPUT_SHAPE
@click.option("--budget", default="cosine=0.999", show_default=True, metavar="[METRIC=]FLOOR",
              help="Fidelity floor to keep: cosine (end to end, worst output), agreement "
                   "(argmax vs float), accuracy or ctc (vs --labels).")
@click.option("--labels", default=None, metavar="Y.npz",
              help="Labels per calibration sample, keyed by output name (accuracy, ctc).")
@click.option("--ctc-blank", type=int, default=0, show_default=True, help="CTC blank class.")
@click.option("--objective", type=click.Choice(CHOICES["tune_objective"]), default="energy",
              show_default=True, help="Least energy, or most synaptic-op sparsity.")
@click.option("--energy-preset", default="spikingbrain", show_default=True)
@click.option("--max-time", type=float, default=600.0, show_default=True, callback=_seconds,
              help="Seconds the search may take (it keeps the best settings found so far).")
@click.option("-o", "--output", required=True, help="Config file to write (.json).")
@click.option("--html", "html_out", default=None, help="Write the report with the search.")
@click.option("--json", "json_out", default=None, help="Write report.json with the search.")
@guarded
def tune(model: str, calib: str, config_file: str | None, preset: str | None, sets: tuple,
         exclude: tuple, input_shapes: tuple, budget: str, labels: str | None, ctc_blank: int,
         objective: str, energy_preset: str, max_time: float, output: str,
         html_out: str | None, json_out: str | None) -> None:
    """Search per-layer settings of MODEL that keep a fidelity floor at the least energy (or
    the most sparsity); write them as a config file that `compile --config` reads."""
    from sbcompile.config import ENERGY_CONVENTIONS
    from sbcompile.npz import load_npz
    from sbcompile.tune_metrics import load_labels, parse_budget

    metric, floor = parse_budget(budget)
    if energy_preset not in ENERGY_CONVENTIONS:
        raise SbcError(f"unknown energy preset '{energy_preset}' (known: "
                       f"{', '.join(ENERGY_CONVENTIONS)})")
    config = build_config(config_file, preset, sets, exclude)
    outs = {flag: check_output_path(p, flag) for p, flag in
            ((output, "-o"), (html_out, "--html"), (json_out, "--json")) if p is not None}
    from sbcompile.pipeline import load_model

    calib_data = load_npz(calib)
    graph = load_model(_model_path(model), parse_input_shapes(input_shapes) or None, calib_data)
    label_data = load_labels(labels, list(graph.outputs)) if labels else None
    if metric in ("accuracy", "ctc") and label_data is None:
        raise SbcError(f"--budget {metric}=...: a task metric needs --labels Y.npz")
    _run_tune(graph, config, calib_data, metric, floor, objective, energy_preset, label_data,
              ctc_blank, max_time, outs)


def _run_tune(graph, config, calib_data, metric, floor, objective, energy_preset, labels,
              blank, max_time, outs: dict) -> None:
    import dataclasses

    from sbcompile.output_path import write_atomic
    from sbcompile.pipeline import compile_graph
    from sbcompile.progress import quiet
    from sbcompile.report import print_terminal, print_tune
    from sbcompile.report_html import render_html
    from sbcompile.tune import tune as search

    with TuneProgress(floor) as progress, quiet():
        result = search(graph, config, calib_data, metric, floor, objective, energy_preset,
                        labels, blank, max_time, progress)
    with quiet():
        art = compile_graph(graph, dataclasses.replace(result.config, targets=[]), calib_data)
    report = {**art.report, "config": result.config.to_json(), "tune": result.summary()}
    print_terminal(report, energy_preset, console=console)
    print_tune(report["tune"], console=console)
    data = (json.dumps(result.config.to_json(), indent=1) + "\n").encode()
    write_atomic(outs["-o"], lambda f: f.write(data))
    console.print(f"wrote {escape(str(outs['-o']))}")
    if "--json" in outs:
        doc = json.dumps(report, indent=1).encode()
        write_atomic(outs["--json"], lambda f: f.write(doc))
        console.print(f"wrote {escape(str(outs['--json']))}")
    if "--html" in outs:
        page = render_html(report, energy_preset).encode()
        write_atomic(outs["--html"], lambda f: f.write(page))
        console.print(f"wrote {escape(str(outs['--html']))}")


class TuneProgress:
    """The search's progress bar (stderr, on a terminal): evaluations, the phase, and the
    cheapest settings that keep the floor so far."""

    def __init__(self, floor: float) -> None:
        self.floor, self.best = floor, None
        self.bar = None

    def __enter__(self):
        if sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self.bar = Progress(TextColumn("[bold]tune[/]"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.description}"),
                                console=err_console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=None)
        return self

    def begin(self, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=total)

    def __call__(self, trial, n: int) -> None:
        if trial.feasible and (self.best is None or trial.cost < self.best.cost):
            self.best = trial
        if self.bar is None:
            return
        best = (f"best {self.best.energy_pJ / 1e3:,.2f} nJ at {self.best.metric:.4f}"
                if self.best else f"floor {self.floor:g} not met yet")
        total = self.bar.tasks[0].total
        self.bar.update(self.task, completed=n, total=max(total or 0, n),
                        description=escape(f"{trial.note} -> {trial.metric:.4f}; {best}"))

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


@main.command()
@click.argument("artifact")
@click.option("--json", "json_out", default=None, help="Write report.json here.")
@click.option("--html", "html_out", default=None, help="Write the HTML report here.")
@click.option("--energy-preset", default="spikingbrain", show_default=True)
@click.option("--chip", type=click.Choice(["loihi"]), default=None,
              help="Energy and latency per inference on a chip model (SANA-FE; the `chip` "
                   "extra), with the spike traffic of --input.")
@click.option("--neurobench", is_flag=True,
              help="NeuroBench metrics on --input, computed by the neurobench package on the "
                   "model's PyTorch form (the `metrics` extra).")
@click.option("--input", "input_path", default=None, metavar="X.npz",
              help="Inputs whose traffic --chip simulates and --neurobench measures (e.g. the "
                   "calibration set).")
@guarded
def report(artifact: str, json_out: str | None, html_out: str | None, energy_preset: str,
           chip: str | None, neurobench: bool, input_path: str | None) -> None:
    """Show the report of a compiled ARTIFACT; write it as JSON and/or HTML."""
    from sbcompile.api import load
    from sbcompile.output_path import write_atomic
    from sbcompile.report import print_terminal
    from sbcompile.report_html import render_html

    for path, flag in ((json_out, "--json"), (html_out, "--html")):
        if path is not None:
            check_output_path(path, flag)
    wanted = [flag for flag, on in (("--chip", chip), ("--neurobench", neurobench)) if on]
    if wanted and input_path is None:
        raise SbcError(f"{wanted[0]} measures a run: give --input X.npz (e.g. the calibration "
                       "set)")
    model = load(artifact)
    rep = dict(model.report)
    if not rep:
        raise SbcError(f"{artifact}: the artifact holds no report")
    if rep.get("measured") and energy_preset not in rep["energy"]:
        raise SbcError(f"unknown energy preset '{energy_preset}' (known: "
                       f"{', '.join(rep['energy'])})")
    if wanted and not rep.get("measured"):
        raise SbcError(f"{artifact}: compiled without calibration data, its report has no "
                       f"measurements to set {wanted[0]} beside; compile with --calib")
    if rep.get("measured"):
        from sbcompile.chip import chip_section
        from sbcompile.npz import load_npz

        feeds = load_npz(input_path) if wanted else None
        rep["chip"] = chip_section(model, chip, feeds)
        if neurobench:
            from sbcompile.neurobench_metrics import neurobench_metrics

            rep["neurobench"] = neurobench_metrics(model, feeds)
    print_terminal(rep, energy_preset, console=console)
    if json_out is not None:
        data = json.dumps(rep, indent=1).encode()
        write_atomic(Path(json_out), lambda f: f.write(data))
        console.print(f"wrote {escape(json_out)}")
    if html_out is not None:
        page = render_html(rep, energy_preset).encode()
        write_atomic(Path(html_out), lambda f: f.write(page))
        console.print(f"wrote {escape(html_out)}")


@main.command()
@click.argument("artifact")
@click.option("--input", "input_path", required=True, help="Inputs (.npz, keyed by input name).")
@click.option("--target", type=click.Choice(list(TARGETS)), default="reference",
              show_default=True,
              help="torch: the PyTorch program (GPU or CPU, --device); onnxruntime: the QDQ "
                   "export in batches, for evaluating a data set fast.")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True, help="Torch target: where the module runs (auto: the GPU "
                                      "when there is one).")
@click.option("--float", "use_float", is_flag=True, help="Run the un-spiked baseline graph.")
@click.option("--interpret", is_flag=True, default=None,
              help="Triton target: run the kernels on Triton's CPU interpreter (no GPU); "
                   "TRITON_INTERPRET=1 does the same.")
@click.option("--timeout", type=float, default=None, callback=_seconds,
              help="Seconds the run may take [default: 120 on lava and triton, none on "
                   "reference].")
@click.option("-o", "--output", default=None, help="Write outputs (.npz).")
@guarded
def run(artifact: str, input_path: str, target: str, device: str, use_float: bool,
        interpret: bool | None, timeout: float | None, output: str | None) -> None:
    """Run a compiled ARTIFACT on inputs."""
    from sbcompile.api import load
    from sbcompile.batch_axes import input_samples
    from sbcompile.ir.records import count_bounds
    from sbcompile.npz import load_npz, save_npz

    if output is not None:
        check_output_path(output, "-o")
    if timeout is None and target != "reference":
        timeout = DEFAULT_TIMEOUT_S
    model = load(artifact)
    feeds = load_npz(input_path)
    with deadline(timeout if target != "lava" else None, f"the {target} run"):
        result = model.run(feeds, target, use_float=use_float, interpret=interpret or None,
                           timeout=timeout or DEFAULT_TIMEOUT_S, device=device)
    for name, arr in result.outputs.items():
        console.print(escape(f"{name}: {arr.dtype}{list(arr.shape)}  mean "
                             f"{float(arr.mean()):.6g}"))
    if not use_float and count_bounds(model.graph):
        _print_saturations(model.graph, feeds)
    if result.op_counts and model.report.get("measured"):
        _print_op_counts(result.op_counts, model.report, input_samples(model.graph, feeds))
    if output is not None:
        save_npz(output, result.outputs)
        console.print(f"wrote {escape(output)}")


DEFAULT_TIMEOUT_S = 120.0


@contextlib.contextmanager
def deadline(seconds: float | None, what: str):
    """Raise SbcError if the block runs longer than ``seconds`` (SIGALRM; the Lava runner keeps
    its own timeout, enforced on its child)."""
    if seconds is None:
        yield
        return

    def expire(signum, frame):
        raise SbcError(f"{what} exceeded its timeout of {seconds:g} s (--timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _print_saturations(graph, feeds: dict) -> None:
    """Counts these inputs drove past the bounds measured at compile time (they saturate)."""
    from sbcompile.passes.count_bounds import saturations

    sat = saturations(graph, feeds)
    clipped = sum(s["saturated"] for s in sat.values())
    total = sum(s["counts"] for s in sat.values())
    worst = max(sat, key=lambda n: sat[n]["saturated"])
    console.print(f"saturated counts: {clipped:,} of {total:,} beyond the measured bounds"
                  + (f" (most in '{escape(worst)}', bound {sat[worst]['bound']})"
                     if clipped else ""))


def _print_op_counts(op_counts: dict, report: dict, samples: int) -> None:
    """Op counts measured on the simulated chip beside the compile-time estimate."""
    from sbcompile.report import simulated_vs_compiled

    t = Table("layer", "synaptic ops sim / est", "spike messages sim / est",
              "neuron updates sim / est", show_edge=False,
              title=f"simulated vs compile-time estimate (calibration average x {samples})")
    for row in simulated_vs_compiled(op_counts, report, samples):
        t.add_row(escape(row["layer"]), *(f"{row[k]['simulated']:,} / {row[k]['compile_time']:,}"
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

    check_output_path(output, "-o")
    result = export_artifact(artifact, fmt, output, allow_partial)
    for note in result["notes"]:
        console.print(escape(f"note: {note}"))
    if result["left_out"]:
        console.print(escape(f"left out {len(result['left_out'])} node(s) from "
                             f"'{result['left_out'][0]}' on"))
    console.print(f"wrote {escape(output)}")


@main.command()
@click.option("--preset", default="spikingbrain", show_default=True)
@click.option("--out", "out_dir", default="out", show_default=True,
              help="Folder for the artifact and reports.")
@guarded
def demo(preset: str, out_dir: str) -> None:
    """The whole path on the bundled digits CNN."""
    from sbcompile.demo import run_demo

    run_demo(preset, out_dir, console)


if __name__ == "__main__":
    main()
