"""Dask distributed against Ray for the layer-parallel compile, measured on this machine: install
size and time (a fresh virtual environment each, pinned versions), start of a local cluster of
two single-threaded workers, the round trip of small tasks, resident memory of the idle cluster
(every process it started), and a worker SIGKILLed inside its task (is the task retried, and how
long until its result arrives). Writes ``benchmarks/results/dist_engines.json``.

    python benchmarks/dist_engines.py            # both engines, each in its own fresh venv
    python benchmarks/dist_engines.py --probe dask   # only the probe, in this interpreter
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "dist_engines.json"
ENGINES = {"dask": "distributed==2026.8.0", "ray": "ray==2.60.0"}
TASKS = 200


def _descendants_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and every process below it, in MiB."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    family, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in family} - family
        family |= more
        grew = bool(more)
    total = 0
    for pid in family:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _noop(x):
    return x


def _die_once(marker: str) -> int:
    """SIGKILL this worker the first time (marker absent), then return its pid."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def probe_dask() -> dict:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(2)
    started = time.perf_counter() - t0
    client.submit(_noop, 0).result()
    t0 = time.perf_counter()
    client.gather([client.submit(_noop, i, pure=False) for i in range(TASKS)])
    overhead = (time.perf_counter() - t0) / TASKS
    idle = _descendants_rss_mb(os.getpid())
    marker = tempfile.mktemp()
    t0 = time.perf_counter()
    try:
        client.submit(_die_once, marker, pure=False).result(timeout=120)
        survived, error = True, None
    except Exception as e:  # what the engine reports when it gives up
        survived, error = False, f"{type(e).__name__}: {e}"
    recovery = time.perf_counter() - t0
    client.close()
    cluster.close()
    import distributed

    return {"version": distributed.__version__, "start_s": started, "task_overhead_ms":
            overhead * 1e3, "idle_cluster_rss_mb": idle, "killed_worker_retried": survived,
            "killed_worker_error": error, "killed_worker_result_s": recovery}


def probe_ray() -> dict:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    noop = ray.remote(num_cpus=1)(_noop)
    ray.get(noop.remote(0))
    started = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get([noop.remote(i) for i in range(TASKS)])
    overhead = (time.perf_counter() - t0) / TASKS
    idle = _descendants_rss_mb(os.getpid())
    marker = tempfile.mktemp()
    die = ray.remote(num_cpus=1, max_retries=3)(_die_once)
    t0 = time.perf_counter()
    try:
        ray.get(die.remote(marker), timeout=120)
        survived, error = True, None
    except Exception as e:
        survived, error = False, f"{type(e).__name__}: {e}"
    recovery = time.perf_counter() - t0
    ray.shutdown()
    return {"version": ray.__version__, "start_s": started, "task_overhead_ms": overhead * 1e3,
            "idle_cluster_rss_mb": idle, "killed_worker_retried": survived,
            "killed_worker_error": error, "killed_worker_result_s": recovery}


def measure(engine: str) -> dict:
    """Install ``engine`` into a fresh venv (timed, sized), then run its probe there."""
    with tempfile.TemporaryDirectory(prefix=f"sbc-{engine}-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = next((venv / "lib").glob("python*/site-packages"))
        before = _tree_bytes(site)
        t0 = time.perf_counter()
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir",
                        ENGINES[engine]], check=True)
        install_s = time.perf_counter() - t0
        added = _tree_bytes(site) - before
        out = subprocess.run([str(venv / "bin" / "python"), __file__, "--probe", engine],
                             check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result.update(install_s=install_s, install_mb=added / 2 ** 20, requirement=ENGINES[engine])
    return result


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", choices=sorted(ENGINES))
    args = ap.parse_args()
    if args.probe:
        print(json.dumps({"dask": probe_dask, "ray": probe_ray}[args.probe]()))
        return
    results = {engine: measure(engine) for engine in ENGINES}
    for engine, r in results.items():
        print(f"{engine:>5}: install {r['install_mb']:.0f} MB in {r['install_s']:.1f} s, start "
              f"{r['start_s']:.1f} s, task {r['task_overhead_ms']:.2f} ms, idle "
              f"{r['idle_cluster_rss_mb']:.0f} MB, killed worker retried: "
              f"{r['killed_worker_retried']} ({r['killed_worker_result_s']:.1f} s)")
    results.update(date=str(date.today()), machine=f"{platform.machine()}, "
                   f"{len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
