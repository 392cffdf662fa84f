"""Pre-flight memory estimate of a Lava simulation, and the kernel's out-of-memory kills.

The simulation is one child process plus one OS process per Lava process, each a fork of the
child: the Python interpreter, numpy and Lava pages are shared until written, so a process costs
its private pages (``PROCESS_BYTES``, measured on lava-nc 0.10.0 with Python 3.11) plus what it
holds. A value is held by its producer and by each process that reads it; a synapse layer works
on the step's spikes and synaptic input in float64 and integrates int64 accumulator states (one
per fan-in partial), and holds its weights once as int8 and once in float32 per fan-in partial
(the products' operands). Graph inputs sit in the child and the processes that read them.
"""
from __future__ import annotations

import math
from pathlib import Path

from sbcompile.runtime.lava.topology import build_topology

CHILD_BYTES = 250 << 20    # the child: interpreter, numpy, Lava, the program
PROCESS_BYTES = 40 << 20   # one Lava process: private pages of a forked model and its runtime
LAVA_PROCESSES_BYTES = 150 << 20  # Lava's runtime service and manager


def estimate_bytes(plan: dict, shapes: dict[str, tuple[int, ...]], form: str,
                   bands: int | None = None) -> int:
    """Peak resident bytes of simulating ``plan`` with these shapes (of its values and
    parameters), in ``form``."""
    specs = build_topology(plan, form, bands)
    size = {name: 8 * math.prod(shape) for name, shape in shapes.items()}
    held = 0
    processes = len(specs)
    for spec in specs:
        held += sum(size.get(v, 0) for v in spec.produces | spec.reads())
        for layer in spec.layers:
            for syn in layer["synapses"]:
                acc = size.get(syn["acc"], 0)
                spikes = size.get(layer["encoder"]["x"], 0)
                held += spikes * 2 + acc * (2 * syn["fan_in_split"] + 2)
                held += math.prod(shapes[syn["weight"]]) * (1 + 4 * syn["fan_in_split"])
        if spec.kind == "accumulator":
            processes += 1  # its synapse process
    return CHILD_BYTES + LAVA_PROCESSES_BYTES + processes * PROCESS_BYTES + held


def oom_kills() -> int | None:
    """The kernel's count of processes ended by its out-of-memory killer."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def gb(n: int | float) -> str:
    return f"{n / 2**30:.1f} GB"

