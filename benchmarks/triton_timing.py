"""Timing helpers of the Triton benchmarks: CUDA-graph replays over rotated weight copies (so the
L2 cache never holds the weights), the device-to-device copy bandwidth, and the machine line."""
from __future__ import annotations

import datetime
import math
import platform
import statistics

import torch

L2_DEFEAT_BYTES = 256 << 20  # rotate copies until the working set is ~5x the H200's 50 MB L2


def copies_for(nbytes: int, cap: int = 64) -> int:
    """How many copies of an operand of ``nbytes`` the rotation needs."""
    return max(2, min(cap, math.ceil(L2_DEFEAT_BYTES / max(nbytes, 1))))


def graph_time_us(calls, replays: int = 20) -> float:
    """Median microseconds per call: warm every call up (compiles), capture one CUDA graph that
    runs each call once, replay it ``replays`` times between device events."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / len(calls))
    del graph
    return statistics.median(samples)


def copy_bandwidth_gbs(nbytes: int = 4 << 30) -> float:
    """Device-to-device copy bandwidth, bytes read plus bytes written per second, in GB/s."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    us = graph_time_us([lambda: dst.copy_(src)], replays=10)
    return 2 * nbytes / us / 1e3


def machine() -> dict:
    props = torch.cuda.get_device_properties(0)
    import triton
    return {"gpu": props.name, "sms": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
