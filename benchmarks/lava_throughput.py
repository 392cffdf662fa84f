"""Lava simulation speed: our spiking graph against a network of Lava's built-in LIF + Dense
(and LIF + Conv) processes of the same shape, and start-up time against the number of layers.

Shape: L fully connected layers of N neurons, one token; and L 3x3 convolutions (padding 1) of
C channels over an S x S map, one image. Ours: spike_encode -> spike_linear ->
spike_decode per layer with a static threshold and max_count = W, fed with inputs that saturate
every count, so in unary mode each encoder neuron fires on every step of its W-step window;
levels run one after another. Built-in: a LIF layer driven by its bias (the input) and L
Dense + LIF layers, every neuron firing on every step (the densest activity the network can
have). Steps/s: simulated time steps per wall second, after the first step; synaptic events/s:
spikes x fan-out delivered per wall second (ours measured in the simulation, the LIF network's
from its deterministic firing: N x N per Dense per step). Each round measures every graph, the
reference last; a row is the round with its median ratio to the reference. The conv rows do the
same with Lava's Conv (fixed point) between LIF layers of shape (S, S, C); synaptic events are
the spikes times the synapses each drives (border positions drive fewer), images/s the windows
completed per second. Start-up: building the processes plus Lava's compile and process launch
(the first step) in this process; ``simulate`` adds the supervised child's start and imports.

    python benchmarks/lava_throughput.py [--width 256] [--layers 3] [--window 64]
        [--channels 16] [--size 32]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

import sbcompile.runtime.lava  # noqa: F401  (the Python 3.11 import hook, before Lava)
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense
from lava.proc.lif.process import LIF

from sbcompile.backends.lava import lower
from sbcompile.ir.graph import Graph, Node, Value
from sbcompile.runtime.lava.connectivity import layer_geometry
from sbcompile.runtime.lava.network import LavaNetwork
from sbcompile.runtime.lava.runner import simulate

RESULTS = Path(__file__).resolve().parent / "results" / "lava_throughput.json"


def spiking_chain(width: int, layers: int, window: int) -> Graph:
    """x [1, width] through ``layers`` spiked linear layers (static threshold, max_count)."""
    rng = np.random.default_rng(0)
    g = Graph("chain", ["x"], [], {"x": Value("x", (1, width), "float32")}, [])
    x = "x"
    for i in range(layers):
        w = g.add_param(f"w{i}", rng.integers(1, 128, size=(width, width)).astype(np.int8))
        vth = g.add_param(f"vth{i}", np.float32(1e-3))
        scale = g.add_param(f"s{i}", np.full((1, width), 1e-3, np.float32))
        counts, v, acc, y = (g.add_value(f"{n}{i}", s, d) for n, s, d in [
            ("c", (1, width), "int32"), ("v", (), "float32"), ("acc", (1, 1, width), "int32"),
            ("y", (1, width), "float32")])
        g.nodes += [Node(f"enc{i}", "spike_encode", [x, vth], [counts, v],
                         {"policy": "static", "max_count": window}),
                    Node(f"lin{i}", "spike_linear", [counts, w], [acc]),
                    Node(f"dec{i}", "spike_decode", [acc, v, scale], [y])]
        x = y
    g.outputs = [x]
    return g


def conv_chain(channels: int, size: int, layers: int, window: int) -> Graph:
    """x [1, C, S, S] through ``layers`` spiked 3x3 convolutions (padding 1, static threshold,
    max_count)."""
    rng = np.random.default_rng(0)
    g = Graph("convs", ["x"], [], {"x": Value("x", (1, channels, size, size), "float32")}, [])
    x = "x"
    shape = (1, channels, size, size)
    for i in range(layers):
        w = g.add_param(f"w{i}", rng.integers(1, 128, size=(channels, channels, 3, 3))
                        .astype(np.int8))
        vth = g.add_param(f"vth{i}", np.float32(1e-3))
        scale = g.add_param(f"s{i}", np.full((channels,), 1e-3, np.float32))
        counts, v, acc, y = (g.add_value(f"{n}{i}", s, d) for n, s, d in [
            ("c", shape, "int32"), ("v", (), "float32"), ("acc", shape, "int32"),
            ("y", shape, "float32")])
        g.nodes += [Node(f"enc{i}", "spike_encode", [x, vth], [counts, v],
                         {"policy": "static", "max_count": window, "granularity": "sample"}),
                    Node(f"conv{i}", "spike_conv", [counts, w], [acc],
                         {"pads": [1, 1, 1, 1]}),
                    Node(f"dec{i}", "spike_decode", [acc, v, scale], [y], {"layout": "conv"})]
        x = y
    g.outputs = [x]
    return g


def measure_ours(graph: Graph, feeds: dict, mode: str, form: str) -> dict:
    program = lower(graph, mode=mode)
    t0 = time.perf_counter()
    net = LavaNetwork(program, feeds, form)
    net.run_steps(1)
    startup = time.perf_counter() - t0
    steps = net.run() - 1  # until the outputs are recorded
    elapsed = time.perf_counter() - t0 - startup
    results, info = net.collect()
    net.stop()
    events = sum(layer["synaptic_ops"] for layer in info["layers"].values())
    return {"graph": f"ours ({form}, {mode})", "startup_s": startup, "steps": steps,
            "steps_per_s": steps / elapsed, "synaptic_events_per_s": events / elapsed,
            "images_per_s": 1 / elapsed, "processes": len(net.models)}


def run_lif_network(shape: tuple, layers: int, steps: int, synapse) -> tuple[float, float]:
    """LIF layers of ``shape`` joined by ``synapse()`` processes, every neuron firing on every
    step: (start-up s, run s). Bias 65 over a threshold of 64 (Lava shifts vth by 6): every
    neuron fires on every step once the pipeline has filled (checked with a Monitor)."""
    t0 = time.perf_counter()
    lifs = [LIF(shape=shape, du=4095, dv=0, vth=1, bias_mant=65 if i == 0 else 0)
            for i in range(layers + 1)]
    for i in range(layers):
        connection = synapse()
        lifs[i].s_out.connect(connection.s_in)
        connection.a_out.connect(lifs[i + 1].a_in)
    lifs[0].run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    startup = time.perf_counter() - t0
    lifs[-1].run(condition=RunSteps(num_steps=steps))
    elapsed = time.perf_counter() - t0 - startup
    lifs[0].stop()
    return startup, elapsed


def builtin_row(graph: str, startup: float, elapsed: float, steps: int, events: int,
                layers: int) -> dict:
    return {"graph": graph, "startup_s": startup, "steps": steps,
            "steps_per_s": steps / elapsed, "synaptic_events_per_s": events / elapsed,
            "images_per_s": 1 / elapsed, "processes": 2 * layers + 1}


def measure_lif_conv(channels: int, size: int, layers: int, steps: int) -> dict:
    """LIF (S, S, C) -> Conv 3x3 pad 1 -> LIF ...; each Conv delivers every synapse per step."""
    shape = (size, size, channels)
    startup, elapsed = run_lif_network(shape, layers, steps, lambda: Conv(
        weight=np.ones((channels, 3, 3, channels), dtype=np.int32), input_shape=shape,
        padding=1))
    per_step = layer_geometry("spike_conv", (channels, channels, 3, 3),
                              {"strides": None, "pads": [1, 1, 1, 1], "dilations": None,
                               "group": 1}, (channels, size, size)).synapses()
    return builtin_row("LIF + Conv (built-in)", startup, elapsed, steps,
                       per_step * layers * steps, layers)


def measure_lif_dense(width: int, layers: int, steps: int) -> dict:
    """LIF -> Dense -> LIF ...; each Dense delivers N x N events per step."""
    startup, elapsed = run_lif_network((width,), layers, steps, lambda: Dense(
        weights=np.ones((width, width), dtype=np.int32)))
    return builtin_row("LIF + Dense (built-in)", startup, elapsed, steps,
                       width * width * layers * steps, layers)


def median_row(runs: list[dict]) -> dict:
    """The run with the median ratio to the reference run measured beside it."""
    return sorted(runs, key=lambda r: (r["steps_ratio_vs_builtin"], r["steps_per_s"]))[
        len(runs) // 2]


def rounds(ours, builtin, repeat: int) -> list[dict]:
    """``repeat`` rounds of our graphs then the built-in network; the median row of each."""
    runs = []
    for _ in range(repeat):  # interleaved with the reference: the machine is shared
        row = [measure() for measure in ours]
        row.append(builtin(row[0]["steps"]))
        for r in row:
            r["steps_ratio_vs_builtin"] = r["steps_per_s"] / row[-1]["steps_per_s"]
        runs.append(row)
    return [median_row([row[i] for row in runs]) for i in range(len(ours) + 1)]


def print_rows(title: str, rows: list[dict]) -> None:
    print(title)
    print(f"{'graph':28} {'procs':>5} {'steps':>6} {'steps/s':>9} {'syn ev/s':>11} "
          f"{'images/s':>8} {'ratio':>6} {'start s':>7}")
    for r in rows:
        print(f"{r['graph']:28} {r['processes']:5d} {r['steps']:6d} {r['steps_per_s']:9.1f} "
              f"{r['synaptic_events_per_s']:11.3g} {r['images_per_s']:8.2f} "
              f"{r['steps_ratio_vs_builtin']:6.2f} {r['startup_s']:7.2f}")


def time_run_lava(width: int, layers: int) -> float:
    """Wall seconds of a whole supervised run (child start, imports, compile, graded run,
    teardown) of the fused chain."""
    program = lower(spiking_chain(width, layers, 4), mode="graded")
    t0 = time.perf_counter()
    simulate(program, {"x": np.full((1, width), 1.0, np.float32)}, form="fused")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--startup-layers", default="1,2,4,8")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the median ratio is kept")
    args = ap.parse_args()
    w, L, T, C, S = args.width, args.layers, args.window, args.channels, args.size
    dense_graph, dense_feeds = spiking_chain(w, L, T), {"x": np.full((1, w), 1.0, np.float32)}
    conv_graph = conv_chain(C, S, L, T)
    conv_feeds = {"x": np.full((1, C, S, S), 1.0, np.float32)}
    dense = rounds([lambda: measure_ours(dense_graph, dense_feeds, "unary", "fused"),
                    lambda: measure_ours(dense_graph, dense_feeds, "unary", "split")],
                   lambda steps: measure_lif_dense(w, L, steps), args.repeat)
    conv = rounds([lambda: measure_ours(conv_graph, conv_feeds, "unary", "fused"),
                   lambda: measure_ours(conv_graph, conv_feeds, "unary", "split")],
                  lambda steps: measure_lif_conv(C, S, L, steps), args.repeat)
    startup = []
    for n in (int(x) for x in args.startup_layers.split(",")):
        chain = spiking_chain(w, n, 4)
        startup.append({"layers": n,
                        "ours_fused_s": measure_ours(chain, dense_feeds, "graded",
                                                     "fused")["startup_s"],
                        "ours_split_s": measure_ours(chain, dense_feeds, "graded",
                                                     "split")["startup_s"],
                        "lif_dense_s": measure_lif_dense(w, n, 1)["startup_s"],
                        "run_lava_total_s": time_run_lava(w, n)})
    print(f"{os.cpu_count()} CPUs, unary window {T}")
    print_rows(f"{L} dense layers x {w} neurons", dense)
    print_rows(f"{L} conv layers 3x3, {C} channels, {S}x{S}", conv)
    print(f"\n{'layers':>6} {'ours fused s':>12} {'ours split s':>12} {'LIF+Dense s':>11} "
          f"{'run_lava s':>10}")
    for s in startup:
        print(f"{s['layers']:6d} {s['ours_fused_s']:12.2f} {s['ours_split_s']:12.2f} "
              f"{s['lif_dense_s']:11.2f} {s['run_lava_total_s']:10.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.python_version()}", "width": w, "layers": L,
        "window": T, "channels": C, "size": S, "throughput": dense, "conv_throughput": conv,
        "startup": startup}, indent=1))


if __name__ == "__main__":
    main()
