"""Faults on the Lava target end in one clear error within the timeout, with no simulation
process and no /dev/shm/psm_* segment left behind: a process model that raises, a run past its
timeout, a corrupted artifact, a child killed by a signal, a run refused before it starts for
want of memory; and the CLI runs an artifact on Lava, leaving nothing either."""
import contextlib
import glob
import io
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sbcompile.artifact import Artifact
from sbcompile.backends.lava import lower
from sbcompile.cli import main
from sbcompile.demo import EXAMPLE
from sbcompile.errors import ArtifactError, SbcError
from sbcompile.npz import load_npz, save_npz
from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference
from sbcompile.runtime.lava.runner import simulate
from sbcompile.runtime.lava.group import RUN_PREFIX, mapped_segments
from sbcompile.runtime.targets import stored_program

CHILD = "sbcompile.runtime.lava.child"


def simulation_processes() -> set[int]:
    """Live processes of the simulations this process supervises (the child and Lava's own
    processes: their command line names a run folder ``sbc-lava-<this pid>-...``), so that
    simulations other processes run on the same machine do not count."""
    mark = f"{RUN_PREFIX}{os.getpid()}-".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            if CHILD.encode() in cmdline and mark in cmdline:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    pids.add(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return pids


def orphan_segments(before: set[str]) -> set[str]:
    """New /dev/shm/psm_* segments that no live process maps (another process's live
    simulation maps its own)."""
    new = {Path(p).name for p in glob.glob("/dev/shm/psm_*")} - before
    return new - mapped_segments(int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit())


@contextlib.contextmanager
def leaves_nothing_behind(within_s: float):
    segments = {Path(p).name for p in glob.glob("/dev/shm/psm_*")}
    processes = simulation_processes()
    start = time.monotonic()
    yield
    assert time.monotonic() - start < within_s
    assert simulation_processes() <= processes
    assert not orphan_segments(segments)


@pytest.fixture(scope="module")
def images():
    return load_npz(EXAMPLE / "calib.npz")["image"][:4]


@pytest.mark.parametrize("form", ["split", "fused"])
def test_a_raising_process_model_ends_the_run(images, form):
    art = compile_model(EXAMPLE / "model.onnx", "spikingbrain", calib={"image": images},
                        overrides={"count_bound": "worst_case"})
    # activations so large that the adaptive threshold saturates at vth_max: counts outgrow the
    # bound the synapses were sized for (the worst case; measured bounds would saturate them),
    # and the encoder neuron's model raises
    huge = {"image": np.full_like(images, 1e9)}
    with leaves_nothing_behind(within_s=40), pytest.raises(
            SbcError, match=r"^Lava simulation failed in "
                            r"(node_Conv_19\.encode|fused levels? 0(-\d+)?): encoder "
                            r"'node_Conv_19\.encode': a count of 100000 exceeds the bound 193"):
        simulate(lower(art.graph), huge, form=form, timeout=60)


def test_a_run_past_its_timeout_is_stopped(images):
    art = compile_model(EXAMPLE / "model.onnx", "ternary", calib={"image": images},
                        overrides={"max_count": "20000"})
    program = lower(art.graph)  # unary trains of up to 20000 spikes per count: minutes to run
    assert program.mode == "unary"
    with leaves_nothing_behind(within_s=8 + 10), pytest.raises(
            SbcError, match=r"^Lava simulation exceeded its timeout of 8 s( after \d+ steps)?$"):
        simulate(program, {"image": images}, form="split", timeout=8)


def _rewrite_member(path: Path, member: str, data: bytes) -> None:
    """Replace one member of the artifact zip, keeping the manifest (and its checksums)."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    members[member] = data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    path.write_bytes(buf.getvalue())


def test_a_corrupted_artifact_is_refused_before_any_simulation(tmp_path, images):
    art = compile_model(EXAMPLE / "model.onnx", "loihi2", calib={"image": images})
    art.programs.update(lower(art.graph).to_members())
    path = tmp_path / "digits.sbc"
    art.save(path)
    plan = json.loads(zipfile.ZipFile(path).read("programs/lava/plan.json"))
    plan["synapses"][0]["rows"] += 1
    _rewrite_member(path, "programs/lava/plan.json", json.dumps(plan).encode())
    with leaves_nothing_behind(within_s=5), pytest.raises(ArtifactError, match="checksum"):
        simulate(stored_program(Artifact.load(path).programs, art.graph, "lava"),
                 {"image": images})
    # malformed program content behind valid checksums
    art.programs["lava/plan.json"] = b'{"format": 1}'
    art.save(path)
    with leaves_nothing_behind(within_s=5), \
            pytest.raises(ArtifactError, match=r"plan.json' is malformed at \$: 'name'"):
        Artifact.load(path)


def test_cli_runs_an_artifact_on_lava(tmp_path, images):
    art = compile_model(EXAMPLE / "model.onnx", "loihi2", calib={"image": images})
    art.save(tmp_path / "digits.sbc")
    save_npz(tmp_path / "x.npz", {"image": images})
    with leaves_nothing_behind(within_s=60):  # a run that succeeds cleans up too
        result = CliRunner().invoke(main, ["run", str(tmp_path / "digits.sbc"), "--target",
                                           "lava", "--input", str(tmp_path / "x.npz"), "-o",
                                           str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    expected = reference.run(art.graph, {"image": images})
    got = load_npz(tmp_path / "y.npz")
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6)
    bad = CliRunner().invoke(main, ["run", str(tmp_path / "digits.sbc"), "--target", "lava",
                                    "--input", str(tmp_path / "missing.npz")])
    assert bad.exit_code == 2 and "error:" in bad.output and "Traceback" not in bad.output


def test_unknown_form_is_a_clear_error(images):
    art = compile_model(EXAMPLE / "model.onnx", "loihi2", calib={"image": images})
    with leaves_nothing_behind(within_s=5), pytest.raises(SbcError, match="form 'serial'"):
        simulate(lower(art.graph), {"image": images}, form="serial")


def test_a_simulation_beyond_the_available_memory_is_refused_before_it_starts(images,
                                                                               monkeypatch):
    from sbcompile.runtime.lava import runner

    art = compile_model(EXAMPLE / "model.onnx", "loihi2", calib={"image": images})
    monkeypatch.setattr(runner, "available_bytes", lambda: 64 << 20)  # a 64 MB machine
    with leaves_nothing_behind(within_s=5), pytest.raises(
            SbcError, match=r"^the Lava simulation needs about \d+\.\d GB \(estimate\) and 0\.1 "
                            r"GB is available: run fewer samples at once$"):
        simulate(lower(art.graph), {"image": images})


def test_a_killed_simulation_says_how_it_ended(images):
    """The child dies by SIGKILL mid-run (what the kernel's OOM killer sends): one line naming
    the signal, the likely cause and the memory estimate, and nothing left behind."""
    art = compile_model(EXAMPLE / "model.onnx", "ternary", calib={"image": images},
                        overrides={"max_count": "20000"})
    killed = []

    def kill_child(steps: int) -> None:
        if not killed:  # the child leads its group (Lava's processes are its forks)
            killed.extend(p for p in simulation_processes() if os.getpgid(p) == p)
            for pid in killed:
                os.kill(pid, 9)

    with leaves_nothing_behind(within_s=60), pytest.raises(
            SbcError, match=r"^Lava simulation ended by signal SIGKILL \(out of memory, most "
                            r"likely: estimated need \d+\.\d GB, \d+\.\d GB available now\)$"):
        simulate(lower(art.graph), {"image": images}, form="split", timeout=60,
                 progress=kill_child)
    assert killed
