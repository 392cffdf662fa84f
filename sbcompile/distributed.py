"""Layer-parallel compile of a streamed stack on a Dask cluster (docs/DISTRIBUTED.md).

The per-layer work of ``sbcompile.streaming`` becomes two kinds of task. A *forward* task builds
layer i and runs its float graph on layer i's input activations, giving layer i+1's: these form
the chain the calibration data dependency imposes, and each is cheap. A *compile* task builds
layer i, compiles it on the same activations (calibrate, spike, quantise, lower) and writes
``layerNNN.sbc``: the expensive part, independent across layers once its input exists, so it
runs in parallel with the chain and with the other layers' compiles. Both call the functions the
serial ``compile_stream`` calls, on the same inputs, so every artifact member is bit-identical to
the serial compile's.

Float results (the forward activations, the calibration statistics) depend on how many threads
the BLAS library splits a product over, so every task runs with the BLAS thread counts of the
process that submitted it (``threadpoolctl``), and refuses to run if its worker cannot.

Dask keeps the lineage: a worker killed mid-task is restarted by its nanny and the task (and
any activations lost with the worker) is recomputed elsewhere; a layer whose task has killed
``allowed-failures`` workers is reported as an error. Workers write into ``out_dir``, which a
remote cluster's workers must all see.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.streaming import (LayerBuilder, build_layer, compile_layer, forward_layer,
                                 with_memory)

# the chain of forward tasks runs ahead of the compiles that wait on it
FORWARD_PRIORITY, COMPILE_PRIORITY = 1, 0


def blas_threads() -> dict[str, int]:
    """This process's BLAS libraries (threadpoolctl prefix) and the threads each uses."""
    from threadpoolctl import threadpool_info

    return {i["prefix"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@contextlib.contextmanager
def same_blas_threads(wanted: dict[str, int]) -> Iterator[None]:
    """Run the block with the BLAS thread counts ``wanted`` (the submitting process's), so that
    its float results are the ones a serial compile there gets; SbcError if this worker's
    libraries differ or cannot take that many threads."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=wanted):
        got = blas_threads()
        if got != wanted:
            raise SbcError(f"worker BLAS threads {got} differ from the compiling process's "
                           f"{wanted}: start the workers with OPENBLAS_NUM_THREADS of at least "
                           f"{max(wanted.values(), default=1)} and the same numpy and scipy")
        yield


def forward_task(index: int, build: LayerBuilder, acts: np.ndarray,
                 threads: dict[str, int]) -> np.ndarray:
    """Layer ``index``'s float output: the next layer's calibration input."""
    with same_blas_threads(threads):
        return forward_layer(build_layer(index, build), acts)


def compile_task(index: int, build: LayerBuilder, acts: np.ndarray, config: CompileConfig,
                 out_dir: Path | None, threads: dict[str, int]) -> dict:
    """Build, compile and write layer ``index``; its record, with the worker's timings."""
    with same_blas_threads(threads):
        start, cpu = time.perf_counter(), time.process_time()
        graph = build_layer(index, build)
        built = time.perf_counter()
        record = compile_layer(index, graph, acts, config, out_dir)
        del graph
        record.update(build_s=built - start, seconds=time.perf_counter() - start,
                      cpu_s=time.process_time() - cpu)
    return with_memory(record)


def compile_stream_distributed(layers: Sequence[LayerBuilder], calib: np.ndarray,
                               config: CompileConfig, out_dir: Path | None, client,
                               on_layer: Callable[[dict], None] | None = None) -> list[dict]:
    """``compile_stream`` on the Dask cluster ``client`` is connected to: the forward chain and
    the per-layer compiles as tasks (builders must pickle: module functions, partials or
    lambdas). Returns the records in layer order; ``on_layer`` sees each as its layer
    finishes."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    run = uuid.uuid4().hex[:8]
    threads = blas_threads()
    # a task, not scattered data: the scheduler can recompute it if its worker dies
    acts = client.submit(np.ascontiguousarray, calib, dtype=np.float32, key=f"calib-{run}")
    compiles, layer_of = [], {}  # layer_of: task key -> its layer
    for index, build in enumerate(layers):
        compiles.append(client.submit(compile_task, index, build, acts, config, out_dir,
                                      threads, key=f"compile-layer{index:03d}-{run}",
                                      priority=COMPILE_PRIORITY))
        layer_of[compiles[-1].key] = index
        if index + 1 < len(layers):
            acts = client.submit(forward_task, index, build, acts, threads,
                                 key=f"forward-layer{index:03d}-{run}", priority=FORWARD_PRIORITY)
            layer_of[acts.key] = index
    records = []
    try:
        for future in as_completed(compiles):
            try:
                record = future.result()
            except KilledWorker as e:
                deaths = e.allowed_failures + 1
                raise SbcError(f"layer {layer_of.get(e.task, '?')}: its task killed {deaths} "
                               f"worker{'s' if deaths > 1 else ''}, one after another (the "
                               "scheduler's allowed-failures)") from None
            records.append(record)
            if on_layer is not None:
                on_layer(record)
    finally:
        client.cancel(list(compiles))
    return sorted(records, key=lambda r: r["layer"])


@contextlib.contextmanager
def _start_method_restored(unset: bool) -> Iterator[None]:
    """Leave multiprocessing's start method unset if it was: starting the cluster fixes it,
    and a library that sets its own later (Lava) would then fail in this process."""
    try:
        yield
    finally:
        if unset:
            multiprocessing.set_start_method(None, force=True)


@contextlib.contextmanager
def dask_client(workers: int | None = None, address: str | None = None) -> Iterator:
    """A client of the cluster at ``address``, or of a local cluster of ``workers`` worker
    processes of one task thread each (each with its nanny, which restarts a killed worker),
    closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise SbcError("distributed compile needs the 'dist' extra (pip install "
                       "'sbcompile[dist]')") from None
    if address is not None:
        try:
            client = Client(address, timeout=10)
        except (OSError, TimeoutError, ValueError) as e:
            raise SbcError(f"cluster {address}: cannot connect ({e})") from None
        with client:
            yield client
        return
    if workers is None or workers < 1:
        raise SbcError(f"--workers must be >= 1, not {workers}")
    import dask

    # the nanny's default environment pins BLAS to one thread; the tasks set their own counts
    spawn_env = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
                 if not k.endswith("_NUM_THREADS")}
    unset = multiprocessing.get_start_method(allow_none=True) is None
    with _start_method_restored(unset), \
            dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         dashboard_address=":0", worker_dashboard_address=None,
                         silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        yield client
