"""Layer-parallel compile on a local Dask cluster (sbcompile.distributed): every member of every
layer artifact equals the serial compile's (sha256), a SIGKILLed worker's layer is recomputed,
and the CLI streams a folder of ONNX layers serially, on a local cluster and on a running one."""
import functools
import hashlib
import os
import signal
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits
from torch import nn

from sbcompile.cli import main
from sbcompile.config import make_config
from sbcompile.distributed import compile_stream_distributed, dask_client, same_blas_threads
from sbcompile.errors import SbcError
from sbcompile.frontends.torch_frontend import export_module
from sbcompile.streaming import StackShape, compile_stream, decoder_layer, layer_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import RMSNorm, SwiGLU  # noqa: E402

# wide enough that BLAS splits its products over threads (so the float results depend on the
# thread count, which the tasks must match): the serial compile runs with two
SHAPE = StackShape(layers=4, hidden=384, heads=6, kv_heads=2, head_dim=64, intermediate=1536,
                   window=3, rope_theta=500.0)
TOKENS = 6
CONFIG = make_config("spikingbrain", {"targets": ""})


def member_digests(path: Path) -> dict[str, str]:
    """sha256 of every member of an artifact (the zip's own timestamps aside)."""
    with zipfile.ZipFile(path) as z:
        return {name: hashlib.sha256(z.read(name)).hexdigest() for name in z.namelist()}


def stack_digests(folder: Path, layers: int) -> list[dict[str, str]]:
    return [member_digests(layer_path(folder, i)) for i in range(layers)]


def _builders():
    return [functools.partial(decoder_layer, SHAPE, i, TOKENS) for i in range(SHAPE.layers)]


def _calib() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((3, TOKENS, SHAPE.hidden)).astype(
        np.float32)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    with threadpool_limits(limits=2, user_api="blas"):
        records = compile_stream(_builders(), _calib(), CONFIG, out)
    return out, records


@pytest.fixture(scope="module")
def client():
    with dask_client(workers=2) as c:
        yield c


def test_two_workers_match_the_serial_compile_bit_for_bit(serial, client, tmp_path):
    out, serial_records = serial
    seen = []
    with threadpool_limits(limits=2, user_api="blas"):
        records = compile_stream_distributed(_builders(), _calib(), CONFIG, tmp_path, client,
                                             on_layer=seen.append)
    assert [r["layer"] for r in records] == list(range(SHAPE.layers))
    assert sorted(r["layer"] for r in seen) == list(range(SHAPE.layers))
    assert stack_digests(tmp_path, SHAPE.layers) == stack_digests(out, SHAPE.layers)
    for a, b in zip(records, serial_records):
        assert a["totals"] == b["totals"] and a["int8_weight_bytes"] == b["int8_weight_bytes"]


def _killing_builders(marker: Path, victim: int, every_time: bool = False):
    """Builders whose layer ``victim`` SIGKILLs the worker building it: the first time only
    (the marker file remembers), or every time."""
    def make(i):
        def build():
            if i == victim and (every_time or not marker.exists()):
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return decoder_layer(SHAPE, i, TOKENS)
        return build
    return [make(i) for i in range(SHAPE.layers)]


def test_a_killed_worker_is_survived(serial, client, tmp_path):
    marker = tmp_path / "killed"
    out = tmp_path / "out"
    pids = set(client.run(os.getpid).values())
    with threadpool_limits(limits=2, user_api="blas"):
        compile_stream_distributed(_killing_builders(marker, victim=2), _calib(), CONFIG, out,
                                   client)
    assert marker.exists()  # a worker did die in layer 2's task ...
    client.wait_for_workers(2, timeout=120)
    assert set(client.run(os.getpid).values()) != pids  # ... and its nanny started another
    assert stack_digests(out, SHAPE.layers) == stack_digests(serial[0], SHAPE.layers)


def test_a_layer_that_kills_every_worker_is_an_error(tmp_path):
    """On its own one-worker cluster that allows no failure: the first death is final. The
    scheduler blames every task the dead worker held, so layer 0's compile, queued there beside
    layer 1's forward, can be the one reported."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            dask_client(workers=1) as own:
        with pytest.raises(SbcError, match="^layer [01]: its task killed 1 worker, one after"):
            compile_stream_distributed(
                _killing_builders(tmp_path / "k", victim=1, every_time=True), _calib(), CONFIG,
                tmp_path, own)


def test_a_worker_without_the_blas_of_the_compiling_process_is_refused():
    with pytest.raises(SbcError, match="worker BLAS threads .* differ"):
        with same_blas_threads({"libno_such_blas": 2}):
            pass


def test_a_bad_layer_fails_the_distributed_compile(client):
    def two_outputs():
        graph = decoder_layer(SHAPE, 0, TOKENS)
        graph.outputs = graph.outputs + ["attn_residual"]
        return graph

    with pytest.raises(SbcError, match="layer 0 .* one input and one output"):
        compile_stream_distributed([two_outputs], _calib(), CONFIG, None, client)


# ---- the CLI on a folder of ONNX layers ------------------------------------------------------
class Block(nn.Module):
    """x + SwiGLU(RMSNorm(x)): one layer of a stack saved one ONNX file a layer."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.norm, self.mlp = RMSNorm(hidden), SwiGLU(hidden, intermediate)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


@pytest.fixture(scope="module")
def onnx_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layers")
    x = np.random.default_rng(3).standard_normal((2, 5, 40)).astype(np.float32)
    for i in range(3):
        torch.manual_seed(100 + i)
        proto = export_module(Block(40, 72).eval(), (x,), ["hidden"], ["out"])
        (folder / f"block{i:02d}.onnx").write_bytes(proto.SerializeToString())
    calib = folder.parent / "calib.npz"
    np.savez(calib, hidden=x)
    return folder, calib


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_streams_a_folder_serially_and_on_clusters(onnx_stack, client, tmp_path):
    folder, calib = onnx_stack
    serial_out, local_out, remote_out = tmp_path / "s", tmp_path / "l", tmp_path / "r"
    r = invoke("compile", folder, "--calib", calib, "-o", serial_out)
    assert r.exit_code == 0, r.output
    assert "wrote 3 layer artifacts" in r.output and "block02.onnx" in r.output
    r = invoke("compile", folder, "--calib", calib, "-o", local_out, "--workers", 2)
    assert r.exit_code == 0, r.output
    r = invoke("compile", folder, "--calib", calib, "-o", remote_out, "--cluster",
               client.scheduler.address)
    assert r.exit_code == 0, r.output
    expected = stack_digests(serial_out, 3)
    assert stack_digests(local_out, 3) == expected == stack_digests(remote_out, 3)


def assert_user_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: "), result.output
    assert fragment in result.output and "Traceback" not in result.output


def test_cli_stack_bad_inputs(onnx_stack, tmp_path):
    folder, calib = onnx_stack
    out = tmp_path / "out"
    model = next(folder.glob("*.onnx"))
    assert_user_error(invoke("compile", folder, "--calib", calib, "-o", out, "--workers", 0),
                      "--workers must be >= 1")
    assert_user_error(invoke("compile", model, "--calib", calib, "-o", tmp_path / "a.sbc",
                             "--workers", 2), "compile a folder of layer models")
    assert_user_error(invoke("compile", folder, "--calib", calib, "-o", out, "--workers", 2,
                             "--cluster", "tcp://127.0.0.1:8786"), "not both")
    assert_user_error(invoke("compile", folder, "-o", out), "--calib must give")
    two = tmp_path / "two.npz"
    np.savez(two, a=np.zeros(1), b=np.zeros(1))
    assert_user_error(invoke("compile", folder, "--calib", two, "-o", out), "holds 2 arrays")
    assert_user_error(invoke("compile", tmp_path, "--calib", calib, "-o", out), "found none")
    assert_user_error(invoke("compile", folder, "--calib", calib, "-o", out, "--cluster",
                             "nonsense"), "cluster nonsense: cannot connect")
    assert not out.exists()
