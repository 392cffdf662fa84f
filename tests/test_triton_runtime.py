"""The Triton target against the reference interpreter, on the CPU.

Triton's interpreter must be chosen before Triton is first imported, so the kernel tests run in
a child process with TRITON_INTERPRET=1 (``test_kernels_under_interpreter`` starts it on this
file); in the parent they are skipped and nothing here imports Triton. Integer results (counts,
vth of the dynamic threshold, acc) must equal the reference bit for bit; float outputs agree
within FLOAT_TOL of the largest |y| (the decode sums group products in a different order).
"""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph, Node, Value
from sbcompile.ir.ops import threshold_shape
from sbcompile.ir.records import SpikedLayer, set_spiked_layer
from sbcompile.runtime import reference
from sbcompile.runtime import reference_spike as rs

CHILD = os.environ.get("TRITON_INTERPRET") == "1"
child_only = pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process")
FLOAT_TOL = 1e-5
DYNAMIC = {"policy": "dynamic", "granularity": "token", "k": 3.0, "vth_min": 1e-5,
           "vth_max": 1e4, "max_count": None, "safety_count": 2 ** 20}


@pytest.mark.skipif(CHILD, reason="this is the child")
def test_kernels_under_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" in proc.stdout  # the parent-only tests


@pytest.mark.skipif(CHILD, reason="parent only")
def test_no_gpu_is_a_clear_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from sbcompile.backends.triton import lower
    from sbcompile.runtime.triton.executor import run
    graph = mlp_graph(64, [32], group=None)
    with pytest.raises(SbcError, match="needs a CUDA GPU"):
        run(lower(graph), {"x": np.ones((1, 64), np.float32)})


# ---- graphs --------------------------------------------------------------------------------
def spiked_layer(g: Graph, x: str, n_in: int, n_out: int, rng, group, enc_attrs, tag: str,
                 bias=True, threshold=None) -> str:
    """x -> spike_encode -> spike_linear -> spike_decode; returns the output value."""
    lead = tuple(g.values[x].shape[:-1])
    counts = g.add_value(f"{tag}_counts", lead + (n_in,), "int32")
    vth_shape = np.shape(threshold) if enc_attrs["policy"] == "static" else \
        threshold_shape(lead + (n_in,), enc_attrs["granularity"])
    vth = g.add_value(f"{tag}_vth", vth_shape, "float32")
    inputs = [x]
    if enc_attrs["policy"] == "static":
        inputs.append(g.add_param(f"{tag}_threshold", np.array(threshold, np.float32)))
    g.nodes.append(Node(f"{tag}_encode", "spike_encode", inputs, [counts, vth], dict(enc_attrs)))
    w = g.add_param(f"{tag}_w", rng.integers(-127, 128, (n_out, n_in), dtype=np.int8))
    n_groups = n_in // group if group else 1
    acc = g.add_value(f"{tag}_acc", lead + (n_groups, n_out), "int32")
    g.nodes.append(Node(f"{tag}_linear", "spike_linear", [counts, w], [acc],
                        {"group_size": group}))
    scale = g.add_param(f"{tag}_scale", (rng.random((n_groups, n_out)) * 0.01).astype(np.float32))
    dec_in = [acc, vth, scale]
    if bias:
        dec_in.append(g.add_param(f"{tag}_bias", rng.standard_normal(n_out).astype(np.float32)))
    y = g.add_value(f"{tag}_y", lead + (n_out,), "float32")
    g.nodes.append(Node(f"{tag}_decode", "spike_decode", dec_in, [y], {"layout": "linear"}))
    return y


def mlp_graph(n_in: int, widths: list[int], group=128, enc=None, seed=0, lead=("batch",),
              threshold=None) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph("mlp", ["x"], [], {"x": Value("x", tuple(lead) + (n_in,), "float32")}, [])
    x, width = "x", n_in
    for i, n_out in enumerate(widths):
        y = spiked_layer(g, x, width, n_out, rng, group if group and width % group == 0
                         else None, enc or DYNAMIC, f"l{i}", threshold=threshold)
        if i < len(widths) - 1:
            x = g.add_value(f"r{i}", g.values[y].shape, "float32")
            g.nodes.append(Node(f"relu{i}", "relu", [y], [x]))
        width = n_out
    g.outputs = [y]
    return g


def check_against_reference(graph: Graph, feeds: dict, config=None, **run_kw) -> dict:
    from sbcompile.backends.triton import lower
    from sbcompile.runtime.triton.executor import run
    got = run(lower(graph, config), feeds, interpret=True, **run_kw)
    ints = [n.outputs[0] for n in graph.nodes if n.op in ("spike_encode", "spike_linear")]
    ref = reference.evaluate(graph, feeds, keep=ints)
    for name in ints:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    for name in graph.outputs:
        scale = max(1.0, float(np.abs(ref[name]).max()))
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=FLOAT_TOL * scale,
                                   err_msg=name)
    return got


def activations(rng, shape, zero_row=True):
    x = (rng.standard_normal(shape) * rng.lognormal(0, 1.5, shape)).astype(np.float32)
    if zero_row and shape[0] > 1:
        x[1] = 0.0
    x.reshape(-1, shape[-1])[0, :3] = [4e5, -3e4, 1e-30]  # counts past 127 and 16319
    return x


# ---- kernels, in the child ------------------------------------------------------------------
@child_only
@pytest.mark.parametrize("rows,row_len,seed,path,split", [
    (1, 1000, 0, "event", False), (1, 1000, 0, "gemm", True), (3, 513, 1, "event", True),
    (4, 7, 3, "gemm", False), (2, 8200, 4, "gemm", True)])
def test_encoder_equals_reference(rows, row_len, seed, path, split):
    import torch

    from sbcompile.runtime.triton import launch
    from sbcompile.runtime.triton.loader import kernels
    rng = np.random.default_rng(seed)
    x = activations(rng, (rows, row_len))
    x[-1, -4:] = [1e30, -3e38, 3e38, 0.0]  # threshold saturates at vth_max, counts clamp
    vth = rs.dynamic_threshold(x, 3.0, 1e-5, 1e4, "token")  # the guards, which the kernel
    counts = rs.quantize_counts(x, vth, 2 ** 20)  # computes too; runs refuse such inputs
    enc = launch.encode(kernels(True), torch.from_numpy(x), row_len, dynamic=True, k=3.0,
                        vth_min=1e-5, vth_max=1e4, limit=2 ** 20, threshold=None, path=path,
                        split=split)
    np.testing.assert_array_equal(enc.vth.numpy(), vth[:, 0])
    np.testing.assert_array_equal(enc.counts.numpy(), counts)
    if path == "gemm":  # digit planes reassemble the counts; peak is max |count|
        planes, peak, n = enc.digits
        rebuilt = sum(planes[p].numpy().astype(np.int64) * 128 ** p for p in range(n))
        np.testing.assert_array_equal(rebuilt, counts)
        assert int(peak) == np.abs(counts).max()
    else:  # the compacted union of nonzero channels, in order, with block pointers
        idx, ev, bptr, m_pad, unit = enc.events
        union = np.flatnonzero(np.any(counts != 0, axis=0))
        nnz = int(bptr[-1])
        np.testing.assert_array_equal(idx[:nnz].numpy(), union)
        np.testing.assert_array_equal(ev[:nnz, :rows].numpy(), counts[:, union].T)
        starts = np.searchsorted(union, np.arange(0, row_len, unit))
        np.testing.assert_array_equal(bptr[:-1].numpy(), starts)


@child_only
@pytest.mark.parametrize("block,path", [(128, "gemm"), (256, "event"), (4096, "event")])
def test_threshold_bits_do_not_depend_on_the_kernel_block(block, path):
    """The pairwise order lets the one-program encoder step through the row in any power-of-two
    block (compacting step by step on the event path): the reference's bits every time."""
    import torch

    from sbcompile.runtime.triton import launch
    from sbcompile.runtime.triton.loader import kernels
    x = activations(np.random.default_rng(block), (1, 1000))
    x[0, 100:300] = 0.0  # a block pointer run with no events
    counts, vth = rs.spike_encode(DYNAMIC, x)
    enc = launch.encode(kernels(True), torch.from_numpy(x), 1000, dynamic=True, k=3.0,
                        vth_min=1e-5, vth_max=1e4, limit=2 ** 20, threshold=None, path=path,
                        split=False, block=block)
    np.testing.assert_array_equal(enc.vth.numpy(), vth[:, 0])
    np.testing.assert_array_equal(enc.counts.numpy(), counts)
    if path == "event":
        idx, ev, bptr, _, unit = enc.events
        union = np.flatnonzero(counts[0])
        np.testing.assert_array_equal(idx[:int(bptr[-1])].numpy(), union)
        np.testing.assert_array_equal(bptr[:-1].numpy(),
                                      np.searchsorted(union, np.arange(0, 1000, unit)))


@child_only
@pytest.mark.parametrize("rows,n_in,n_out,group,seed", [
    (1, 384, 96, 128, 0), (2, 1000, 70, None, 1), (4, 256, 300, 64, 2), (3, 256, 33, 32, 4)])
def test_event_linear_equals_reference(rows, n_in, n_out, group, seed):
    check_linear("event", rows, n_in, n_out, group, seed)


@child_only
@pytest.mark.parametrize("rows,n_in,n_out,group,seed", [
    (5, 384, 96, 128, 0), (40, 256, 130, None, 1), (17, 96, 50, 32, 3), (1, 1024, 70, None, 5),
    (2, 1024, 40, 128, 6)])
def test_int8_gemm_equals_reference(rows, n_in, n_out, group, seed):
    check_linear("gemm", rows, n_in, n_out, group, seed)


@child_only
@pytest.mark.parametrize("rows,n_in,n_out,group,seed,static", [
    (1, 384, 96, 128, 0, False), (3, 1000, 70, None, 1, False), (16, 256, 40, 64, 2, False),
    (2, 256, 33, 32, 3, True)])
def test_dense_count_gemv_equals_reference(rows, n_in, n_out, group, seed, static):
    """The fused quantise + int8 GEMV of decode: counts, vth, acc exact; y within FLOAT_TOL."""
    import torch

    from sbcompile.runtime.triton import launch
    from sbcompile.runtime.triton.loader import kernels
    rng = np.random.default_rng(seed)
    x = activations(rng, (rows, n_in))
    attrs = {**DYNAMIC, "policy": "static"} if static else DYNAMIC
    threshold = np.float32(1.0)  # static: 4e5 -> a count past 16319, inside the safety clamp
    counts_ref, vth_ref = rs.spike_encode(attrs, x, threshold)
    w = rng.integers(-128, 128, (n_out, n_in), dtype=np.int8)
    n_groups = n_in // group if group else 1
    scale = (rng.random((n_groups, n_out)) * 0.01).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    acc_ref = rs.spike_linear({"group_size": group}, counts_ref, w)
    y_ref = rs.spike_decode({"layout": "linear"}, acc_ref, vth_ref, scale, bias)
    enc = launch.encode(kernels(True), torch.from_numpy(x), n_in, dynamic=not static, k=3.0,
                        vth_min=1e-5, vth_max=1e4, limit=2 ** 20,
                        threshold=torch.tensor([threshold]), path="dense")
    for cfg in (None, launch.DenseConfig(bn=16, bk=launch.dense_step(n_in, group), split=1)):
        acc, y = launch.dense_linear(kernels(True), enc, torch.from_numpy(w), group,
                                     torch.from_numpy(scale), torch.from_numpy(bias),
                                     store_acc=True, decode=True, cfg=cfg)
        np.testing.assert_array_equal(enc.counts.numpy(), counts_ref)
        np.testing.assert_array_equal(np.broadcast_to(enc.vth_rows.numpy(), (rows,)),
                                      np.broadcast_to(vth_ref.reshape(-1), (rows,)))
        np.testing.assert_array_equal(acc.numpy(), acc_ref)
        np.testing.assert_allclose(y.numpy(), y_ref, rtol=0,
                                   atol=FLOAT_TOL * np.abs(y_ref).max())


def check_linear(path, rows, n_in, n_out, group, seed):
    import torch

    from sbcompile.runtime.triton import launch
    from sbcompile.runtime.triton.loader import kernels
    rng = np.random.default_rng(seed)
    counts = (rng.integers(-3, 4, (rows, n_in)) * (rng.random((rows, n_in)) < 0.3)).astype(
        np.int32)
    counts[0, 3], counts[-1, 7] = 20000, -(2 ** 20)  # two and three base-128 digits
    w = rng.integers(-128, 128, (n_out, n_in), dtype=np.int8)
    n_groups = n_in // group if group else 1
    scale = (rng.random((n_groups, n_out)) * 0.01).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    vth = (rng.random((rows, 1)) + 0.1).astype(np.float32)
    acc_ref = rs.spike_linear({"group_size": group}, counts, w)
    y_ref = rs.spike_decode({"layout": "linear"}, acc_ref, vth, scale, bias)
    enc = launch.encode(kernels(True), torch.from_numpy(counts.astype(np.float32)), n_in,
                        dynamic=False, k=3.0, vth_min=1e-5, vth_max=1e4, limit=2 ** 20,
                        threshold=torch.ones(1), path=path, unit=min(group or 128, 128))
    enc.vth_rows = torch.from_numpy(vth[:, 0].copy())
    run = launch.event_linear if path == "event" else launch.gemm_linear
    weight = torch.from_numpy(np.ascontiguousarray(w.T) if path == "event" else w)
    acc, y = run(kernels(True), enc, weight, group, torch.from_numpy(scale),
                 torch.from_numpy(bias), store_acc=True, decode=True)
    np.testing.assert_array_equal(acc.numpy(), acc_ref)
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=0, atol=FLOAT_TOL * np.abs(y_ref).max())
    acc_only, none = run(kernels(True), enc, weight, group, None, None, store_acc=True,
                         decode=False)
    assert none is None
    np.testing.assert_array_equal(acc_only.numpy(), acc_ref)
    if path == "event":  # the loop without the id prefetch gives the same integers
        cfg = dataclasses.replace(launch.event_config(n_out, rows), prefetch=False)
        acc, _ = run(kernels(True), enc, weight, group, torch.from_numpy(scale), None,
                     store_acc=True, decode=True, cfg=cfg)
        np.testing.assert_array_equal(acc.numpy(), acc_ref)


# ---- the executor, in the child -----------------------------------------------------------
@child_only
@pytest.mark.parametrize("batch,density,path", [
    (1, 0.8, "dense"), (3, 0.1, "event"), (4, 0.3, "dense"), (20, 0.1, "gemm"),
    (2, 0.8, "gemm_large")])
def test_mlp_paths_by_planned_density(batch, density, path, monkeypatch):
    from sbcompile.runtime.triton import launch
    taken = []
    for name in ("event_linear", "dense_linear", "gemm_linear"):
        def spy(*a, _f=getattr(launch, name), _n=name, **k):
            taken.append(_n.split("_")[0])
            return _f(*a, **k)
        monkeypatch.setattr(launch, name, spy)
    if path == "gemm_large":  # dense counts on a large layer: encoder + split-K int8 GEMM
        monkeypatch.setattr(launch, "FUSED_MAX_WEIGHTS", 1000)
        path = "gemm"
    graph = mlp_graph(256, [128, 64])
    x = activations(np.random.default_rng(batch), (batch, 256))
    for i in range(2):  # the layer records through which the density setting reaches them
        set_spiked_layer(graph, f"l{i}_linear", SpikedLayer("linear", "x", f"l{i}_counts",
                                                            f"l{i}_vth", f"l{i}_encode"))
    check_against_reference(graph, {"x": x}, CompileConfig(triton_density=density))
    assert taken == [path, path]


@child_only
def test_static_threshold_ternary_and_sample_granularity():
    static = {**DYNAMIC, "policy": "static", "max_count": 1}
    graph = mlp_graph(128, [64, 32], enc=static, threshold=0.05)
    check_against_reference(graph, {"x": activations(np.random.default_rng(0), (2, 128))})
    sample = {**DYNAMIC, "granularity": "sample"}
    graph = mlp_graph(128, [48], enc=sample, lead=("batch", 3), group=None)
    x = activations(np.random.default_rng(1), (2, 3, 128))
    check_against_reference(graph, {"x": x})


@child_only
def test_shared_counts_odd_widths_and_reference_fallback():
    # two layers read one encoder; 100 inputs: no int8 GEMM, so 40 rows take the reference
    rng = np.random.default_rng(3)
    g = mlp_graph(100, [24], group=None)
    enc_counts = g.node("l0_linear").inputs[0]
    w2 = g.add_param("w2", rng.integers(-127, 128, (16, 100), dtype=np.int8))
    acc2 = g.add_value("acc2", ("batch", 1, 16), "int32")
    g.nodes.append(Node("second", "spike_linear", [enc_counts, w2], [acc2], {"group_size": None}))
    g.outputs.append(acc2)
    for batch in (2, 20):
        check_against_reference(g, {"x": activations(rng, (batch, 100))})


@child_only
def test_program_round_trips_through_the_artifact(tmp_path):
    from sbcompile.artifact import Artifact
    from sbcompile.backends.triton import lower
    from sbcompile.runtime.targets import stored_program
    from sbcompile.runtime.triton.executor import run
    graph = mlp_graph(256, [64])
    program = lower(graph)
    art = Artifact(graph, {}, programs=program.to_members())
    art.save(tmp_path / "m.sbc")
    loaded = Artifact.load(tmp_path / "m.sbc")
    x = activations(np.random.default_rng(5), (2, 256))
    a = run(program, {"x": x}, interpret=True)
    b = run(stored_program(loaded.programs, loaded.graph, "triton"), {"x": x}, interpret=True)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert set(program.to_members()) == {"triton/plan.json", "triton/weights.safetensors"}


@child_only
def test_bad_feeds_and_mode_switch_are_clear_errors():
    from sbcompile.backends.triton import lower
    from sbcompile.runtime.triton.executor import run
    from sbcompile.runtime.triton.loader import kernels
    graph = mlp_graph(64, [32], group=None)
    with pytest.raises(SbcError, match="input 'x' has shape"):
        run(lower(graph), {"x": np.ones((1, 63), np.float32)}, interpret=True)
    with pytest.raises(SbcError, match="cannot run on the GPU"):
        kernels(False)
