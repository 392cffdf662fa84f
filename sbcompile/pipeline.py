"""The compile driver: model -> IR -> passes -> spiking IR -> artifact (with its report).

A pre-flight estimate of the peak memory (``sbcompile.preflight``), then the declared pass list
(``sbcompile.passmanager``: calibrate -> spike_quantize -> (attention_quantize, when
configured) -> weight_quantize -> count_bounds (with calibration data) -> expand -> analyse),
then lowering to the configured targets. Calibration data is optional for the dynamic (SpikingBrain) policy, whose
thresholds need no statistics (calibrate runs for static thresholds only), and required for
static thresholds; without it the report holds the structure but no measured sparsity, energy or
fidelity.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sbcompile import preflight
from sbcompile.artifact import Artifact
from sbcompile.config import CompileConfig, apply_overrides, make_config
from sbcompile.errors import DynamicDimError, SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.validate import validate
from sbcompile.ir.passes import PassContext
from sbcompile.ir.records import count_bounds, set_calibration
from sbcompile.memory import mib
from sbcompile.passes import calibrate
from sbcompile.passmanager import compile_passes, require_statistics, run_passes, stage
from sbcompile.report import build_report
from sbcompile.target_registry import target_spec

log = logging.getLogger(__name__)


def load_model(model: Any, input_shapes: dict | None = None, calib=None) -> Graph:
    """An ONNX path / bytes / ModelProto, a NIR file (.nir), or an IR Graph, as a validated IR
    graph. ``input_shapes`` pins ONNX input dims ({name: [dims]}, a string for a dim left
    symbolic); a dim that must be static to lower (an LSTM's sequence length) is pinned from
    the shapes of ``calib`` (calibration data) when given."""
    return stage("load", lambda: _load(model, input_shapes, calib))


def _load(model: Any, input_shapes: dict | None, calib) -> Graph:
    if isinstance(model, Graph):
        graph = model.copy()
        validate(graph)  # (the frontends validate what they build)
    elif isinstance(model, (str, Path)) and str(model).endswith(".nir"):
        from sbcompile.frontends.nir_frontend import load_nir

        graph = load_nir(model)
    else:
        from sbcompile.frontends.onnx_frontend import load_onnx

        if isinstance(model, (str, Path)) and str(model).endswith(".npz"):
            raise SbcError(f"{model}: expected an .onnx model, got an .npz file")
        try:
            graph = load_onnx(model, input_shapes)
        except DynamicDimError as e:
            if calib is None:
                raise
            from sbcompile.frontends.onnx_pins import pinned_from_data

            graph = pinned_from_data(model, input_shapes, e, calib)
    return graph


def compile_graph(graph: Graph, config: CompileConfig,
                  calib: dict[str, np.ndarray] | None = None) -> Artifact:
    """Run the passes on a float IR graph; return the artifact (graph, baseline, report).
    With ``fidelity_floor`` set, the per-layer settings are searched first (``tune``) and the
    artifact stores the settings found, its report the search."""
    validate(graph)
    float_graph = graph
    if calib is not None:
        calib = calibrate.check_calibration(graph, calib)
    estimate = preflight.check(graph, config, calib)
    log.info("estimated peak %.0f MiB (batches of %d)", mib(estimate.total), estimate.batch,
             extra={"estimate": estimate})
    # the passes read batches of the planned size (the artifact keeps the config asked for)
    passes_config = config if not estimate.batch or estimate.batch >= config.calib_batch else \
        dataclasses.replace(config, calib_batch=estimate.batch)
    if not config.spike:
        return Artifact(graph, config.to_json(), build_report(graph, graph, config), {}, None)
    search = None
    if config.fidelity_floor is not None:
        from sbcompile.tune import tune_for_compile

        search = tune_for_compile(graph, passes_config, calib)
        config = dataclasses.replace(search.config, calib_batch=config.calib_batch)
        passes_config = search.config
    require_statistics(graph, config, calib)
    g = run_passes(graph, compile_passes(graph, passes_config),
                   PassContext(passes_config, calib, float_graph))
    if calib is not None and search is None:  # below the repair floor: repaired in its bound
        from sbcompile.tune import repair

        search = repair(graph, passes_config, calib, g)
        if search is not None:
            config = dataclasses.replace(search.config, calib_batch=config.calib_batch)
            passes_config = search.config
            g = run_passes(graph, compile_passes(graph, passes_config),
                           PassContext(passes_config, calib, float_graph))
    set_calibration(g, None)  # histograms served the thresholds; the report keeps results
    report = build_report(g, float_graph, config)
    bounds = count_bounds(g)
    if bounds:  # bounds >= the largest count seen: none saturated there
        report["count_bounds"] = {enc: dataclasses.asdict(b) for enc, b in bounds.items()}
    if search is not None:
        report["tune"] = search.summary()
    programs, report["targets"] = lower_targets(g, config)
    return Artifact(g, config.to_json(), report, programs, float_graph)


def lower_targets(graph: Graph, config: CompileConfig) -> tuple[dict[str, bytes], dict]:
    """Programs of the configured targets as artifact members, and per target whether it
    lowered (a model one target cannot hold still compiles for the others; running it there
    repeats the reason)."""
    programs: dict[str, bytes] = {}
    status = {}
    for target in config.targets:
        try:
            members = stage(f"lower {target}",
                            lambda: _lowerer(target)(graph, config).to_members())  # noqa: B023
        except SbcError as e:
            reason = str(e)
        except ImportError as e:  # a target whose extra is not installed
            reason = f"needs sbcompile[{target_spec(target).extra}] ({e.name} is not installed)"
        else:
            programs.update(members)
            status[target] = {"lowered": True, "members": sorted(members)}
            continue
        log.warning("target %s not lowered: %s", target, reason)
        status[target] = {"lowered": False, "reason": reason}
    return programs, status


def specialise(graph: Graph, input_shapes: dict[str, tuple]) -> Graph:
    """A copy of ``graph`` with its inputs' dims pinned to ``input_shapes`` and every value's
    shape inferred again from them: what a target that needs static dims lowers, for inputs of
    those shapes. Shape arithmetic (``Shape`` -> ``Gather`` -> ``Concat`` -> ``Reshape``, as
    exporters spell ``x.reshape(x.shape[0], -1)``) is folded with the reference kernels, so the
    dims it computes stay static through reshapes and transposes."""
    from sbcompile.ir.graph import Value
    from sbcompile.ir.ops import node_attrs
    from sbcompile.ir.shapes import infer
    from sbcompile.runtime.reference import KERNELS

    def fold(node, args):
        return KERNELS[node.op](node_attrs(node), *args)

    g = graph.copy()
    for name, shape in infer(g, {n: tuple(input_shapes[n]) for n in g.inputs}, fold).items():
        if shape is not None and name in g.values and name not in g.params:
            g.values[name] = Value(name, tuple(shape), g.values[name].dtype)
    validate(g)
    return g


def specialised_artifact(art: Artifact, target: str, input_shapes: dict[str, tuple]) -> Artifact:
    """``art`` with its graph specialised to ``input_shapes`` and the ``target`` program lowered
    for it (for a model whose dynamic dims kept the target from lowering at compile time)."""
    graph = specialise(art.graph, input_shapes)
    config = CompileConfig.from_json({**art.config, "targets": [target]})
    programs, status = lower_targets(graph, config)
    if not status[target]["lowered"]:
        raise SbcError(f"{target} target, inputs of shapes {dict(input_shapes)}: "
                       f"{status[target]['reason']}")
    report = {**art.report, "targets": {**art.report.get("targets", {}), **status}}
    return Artifact(graph, art.config, report, programs, art.float_graph)


def _lowerer(target: str):
    return importlib.import_module(target_spec(target, stored=True).backend).lower


def resolve_config(preset: str, overrides: dict[str, str] | None, exclude: list[str] | None,
                   config: CompileConfig | None) -> CompileConfig:
    """``config`` (a config file's, say) when given, else the preset; overrides and exclude
    patterns over it."""
    if config is None:
        return make_config(preset, overrides, exclude)
    return apply_overrides(dataclasses.replace(config, layers=dict(config.layers),
                                               exclude=list(config.exclude)),
                           overrides, exclude)


def compile_model(model: Any, preset: str = "spikingbrain",
                  calib: dict[str, np.ndarray] | None = None,
                  overrides: dict[str, str] | None = None,
                  exclude: list[str] | None = None,
                  input_shapes: dict | None = None,
                  config: CompileConfig | None = None) -> Artifact:
    """Compile an ONNX model (path, bytes, ModelProto) or IR graph under a preset, or under
    ``config`` when given; ``input_shapes`` pins input dims as in ``load_model``."""
    config = resolve_config(preset, overrides, exclude, config)
    return compile_graph(load_model(model, input_shapes, calib), config, calib)


def compile_module(module, example_inputs, preset: str = "spikingbrain",
            calib: dict[str, np.ndarray] | None = None, overrides: dict[str, str] | None = None,
            exclude: list[str] | None = None, input_names: list[str] | None = None,
            dynamic_axes: dict | None = None, config: CompileConfig | None = None) -> Artifact:
    """Compile a PyTorch module (exported through the PyTorch frontend). Axis 0 of every input
    is left symbolic unless ``dynamic_axes`` says otherwise."""
    from sbcompile.frontends.torch_frontend import batch_axes, import_module

    if dynamic_axes is None:
        dynamic_axes = batch_axes(module, example_inputs)
    graph = import_module(module, example_inputs, input_names=input_names,
                          dynamic_axes=dynamic_axes)
    return compile_graph(graph, resolve_config(preset, overrides, exclude, config), calib)
