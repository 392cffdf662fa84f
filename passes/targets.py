"""Which layers get spiked, and with which settings: linear projections (linear, matmul with a
constant 2-D weight) and, when configured, convolutions; minus the layers kept in float (by
``exclude`` or a ``layers`` entry with ``float: true``). Each layer's settings are
``config.layer_settings``'s answer; layers reading one input share one encoder and must agree on
its settings."""
from __future__ import annotations

from dataclasses import dataclass

from sbcompile.config import CompileConfig, LayerSettings, layer_settings
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node


def is_excluded(name: str, config: CompileConfig) -> bool:
    """Whether layer ``name`` stays in float."""
    return layer_settings(config, name).float


def spike_targets(graph: Graph, config: CompileConfig) -> list[tuple[Node, str]]:
    """(node, spiked input value) for every layer whose input is to be spiked."""
    result = []
    for node in graph.nodes:
        if is_excluded(node.name, config):
            continue
        if node.op == "linear" and node.inputs[1] in graph.params:
            result.append((node, node.inputs[0]))
        elif node.op == "matmul" and node.inputs[1] in graph.params \
                and graph.params[node.inputs[1]].ndim == 2:
            result.append((node, node.inputs[0]))
        elif node.op == "conv" and config.spike_conv and node.inputs[1] in graph.params:
            result.append((node, node.inputs[0]))
    return result


@dataclass
class SpikeGroup:
    """The layers reading one spiked value: one encoder, one set of settings."""

    value: str
    layers: list[Node]
    settings: LayerSettings

    @property
    def needs_statistics(self) -> bool:
        """A calibrated static threshold (a fixed one needs no calibration data)."""
        return self.settings.policy == "static" and self.settings.threshold is None


def spike_groups(graph: Graph, config: CompileConfig) -> list[SpikeGroup]:
    """The spike targets grouped by the value they read, in graph order, each with the settings
    its layers share; layers of one group whose settings differ are an error naming both."""
    groups: dict[str, SpikeGroup] = {}
    for node, value in spike_targets(graph, config):
        settings = layer_settings(config, node.name)
        group = groups.get(value)
        if group is None:
            groups[value] = SpikeGroup(value, [node], settings)
            continue
        mine, theirs = settings.encoder_fields(), group.settings.encoder_fields()
        differ = [k for k in mine if mine[k] != theirs[k]]
        if differ:
            raise SbcError(f"layers '{group.layers[0].name}' and '{node.name}' read one spiked "
                           f"input ('{value}') but their settings differ in {differ[0]} "
                           f"({theirs[differ[0]]} vs {mine[differ[0]]}): give them the same "
                           "layers entry")
        group.layers.append(node)
    return list(groups.values())
