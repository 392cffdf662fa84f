"""Tensor-parallel spiking execution over torch.distributed (gloo, two and three processes on
the CPU): every spike_encode's counts, every spike_linear's accumulators and the outputs equal
the single-process reference interpreter's bit for bit, with column and row splits, grouped and
ungrouped weights, dynamic and static thresholds."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sbcompile.artifact import Artifact
from sbcompile.config import make_config
from sbcompile.errors import SbcError
from sbcompile.pipeline import compile_graph, load_model
from sbcompile.runtime import reference
from sbcompile.runtime.tensor_parallel import (MEGATRON_PLAN, TensorParallelRun, digit_planes,
                                               from_planes, make_shard, shard_acc_reference,
                                               shard_bounds, split_of)
from sbcompile.streaming import StackShape, decoder_layer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import build_mlp  # noqa: E402

SHAPE = StackShape(layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=96,
                   window=3, rope_theta=1000.0)


def run_ranks(tmp_path: Path, artifact: Path, feeds: dict, world: int,
              plan: dict | None = None) -> list[dict]:
    np.savez(tmp_path / "feeds.npz", **feeds)
    plan_args = []
    if plan is not None:
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        plan_args = [str(tmp_path / "plan.json")]
    procs = [subprocess.Popen([sys.executable, str(HERE / "tp_rank.py"), str(r), str(world),
                               str(tmp_path / "store"), str(artifact),
                               str(tmp_path / "feeds.npz"), str(tmp_path / f"out{r}.npz"),
                               *plan_args], stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    results = []
    for r in range(world):
        with np.load(tmp_path / f"out{r}.npz") as f:
            results.append(dict(f))
    return results


def integer_values(graph) -> list[str]:
    return [n.outputs[0] for n in graph.nodes if n.op in ("spike_encode", "spike_linear")]


def assert_matches_reference(graph, feeds, results):
    keep = integer_values(graph)
    expected = reference.evaluate(graph, feeds, keep=keep)
    assert keep and all(set(keep + graph.outputs) <= set(r) for r in results)
    for r in results:
        for name in keep + graph.outputs:
            np.testing.assert_array_equal(r[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def decoder_artifacts(tmp_path_factory):
    """The two layer kinds (GLA, SWA), compiled with weight groups of 32 (hidden 64: two
    groups, intermediate 96: three, so a row split cuts at a group)."""
    folder = tmp_path_factory.mktemp("tp")
    calib = np.random.default_rng(5).standard_normal((2, 6, SHAPE.hidden)).astype(np.float32)
    config = make_config("spikingbrain", {"targets": "", "group_size": 32})
    paths = []
    for i in range(2):
        art = compile_graph(decoder_layer(SHAPE, i, 6, seed=3), config, {"hidden_in": calib})
        path = folder / f"layer{i}.sbc"
        Artifact(art.graph, art.config, art.report).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("layer", [0, 1])
def test_two_ranks_equal_one_process_on_decoder_layers(decoder_artifacts, tmp_path, layer):
    graph = Artifact.load(decoder_artifacts[layer]).graph
    x = np.random.default_rng(9).standard_normal((1, 6, SHAPE.hidden)).astype(np.float32)
    results = run_ranks(tmp_path, decoder_artifacts[layer], {"hidden_in": x}, world=2)
    assert_matches_reference(graph, {"hidden_in": x}, results)


def test_three_ranks_all_row_split_on_a_static_threshold_mlp(tmp_path):
    """Another model (the zoo MLP, loihi2 preset: static thresholds, one group per layer), every
    projection split by input channel: int32 partial sums over three ranks."""
    zoo = build_mlp()
    art = compile_graph(load_model(zoo.onnx_bytes()), make_config("loihi2", {"targets": ""}),
                        zoo.inputs)
    path = tmp_path / "mlp.sbc"
    Artifact(art.graph, art.config, art.report).save(path)
    results = run_ranks(tmp_path, path, zoo.eval_inputs, world=3, plan={"*": "row"})
    assert_matches_reference(art.graph, zoo.eval_inputs, results)


def test_digit_planes_round_trip_and_width():
    counts = torch.tensor([0, 1, -1, 127, -127, 128, -128, 5000, -16383, 2 ** 20, -(2 ** 20)],
                          dtype=torch.int32)
    planes = digit_planes(counts, 3)
    assert planes.dtype == torch.int8
    np.testing.assert_array_equal(from_planes(planes).numpy(), counts.numpy())
    small = counts[:5]
    np.testing.assert_array_equal(digit_planes(small, 1)[0].numpy(), small.numpy())


def test_shards_cover_the_weight_and_their_sums_are_exact():
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(40, 96), dtype=np.int8)
    counts = rng.integers(-9, 10, size=(3, 96)).astype(np.int32)
    full = ref_acc = shard_acc_reference(counts, make_shard(w, 32, "column", 0, 1))
    for world in (2, 3, 5):
        cols = [shard_acc_reference(counts, make_shard(w, 32, "column", r, world))
                for r in range(world)]
        np.testing.assert_array_equal(np.concatenate(cols, axis=-1), full)
        rows = [shard_acc_reference(counts, make_shard(w, 32, "row", r, world))
                for r in range(world)]
        np.testing.assert_array_equal(np.sum(rows, axis=0, dtype=np.int32), ref_acc)
    assert shard_bounds(96, 32, 2) == [(0, 32), (32, 96)]
    assert split_of("down_proj_node.spike", MEGATRON_PLAN) == "row"
    assert split_of("q_proj_node.spike", MEGATRON_PLAN) == "column"
    with pytest.raises(SbcError, match="split 'diagonal'"):
        split_of("x", {"*": "diagonal"})


def test_a_run_outside_a_process_group_is_refused():
    with pytest.raises(SbcError, match="torch.distributed is not initialised"):
        TensorParallelRun(decoder_layer(SHAPE, 0, 4))


def test_the_gpu_decode_path_under_gloo_and_the_interpreter(tmp_path):
    """benchmarks/tp_decode.py's path (the Triton encoder, counts broadcast, int8 GEMM shards,
    int32 all-reduce) on two CPU processes: it asserts every accumulator against the reference
    integer path on the whole weight."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(HERE.parent / "benchmarks" /
                                                        "tp_decode.py"),
                           "--small", "--check", "--steps", "1", "--warmup", "0", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "tp_decode_small_w2_m1.json").read_text())
    assert result["checked"] and result["world"] == 2 and result["output_finite"]
