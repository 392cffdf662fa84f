"""The integer attention ops (docs/OPS.md spike_scores, spike_attention): the reference against
numpy's int64 product and the float attention it replaces, the refusals, and the Triton score
kernel against the reference bit for bit.

The kernel tests run on a GPU when there is one (benchmarks/triton_device.sh runs this file on
the H200) and otherwise in a child process with TRITON_INTERPRET=1 (Triton's mode is fixed when
it is first imported), as in test_triton_runtime."""
import os
import subprocess
import sys

import numpy as np
import pytest

from sbcompile.errors import GraphError, SbcError
from sbcompile.ir.graph import Graph, Node, Value
from sbcompile.ir.validate import validate
from sbcompile.runtime import reference
from sbcompile.runtime import reference_float as rf
from sbcompile.runtime import reference_spike as rs

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
BAND = {"scale": 0.25, "causal": 1, "window": 3}


def _gpu() -> bool:
    if INTERPRET:
        return False
    import torch
    return torch.cuda.is_available()


KERNELS_HERE = INTERPRET or _gpu()
kernel_test = pytest.mark.skipif(not KERNELS_HERE, reason="runs on a GPU or in the interpreter "
                                 "child")


def scores_case(b, hq, hkv, tq, tk, d, peak, seed=0):
    """Query counts (a few reaching ``peak``) and int8 keys including -128."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-9, 10, (b, hq, tq, d)).astype(np.int32)
    q.reshape(-1)[rng.choice(q.size, size=min(q.size, 5), replace=False)] = \
        [peak, -peak, peak // 3, 127, -128][:min(q.size, 5)]
    k = rng.integers(-128, 128, (b, hkv, tk, d), dtype=np.int8)
    return q, k


def int64_scores(q, k):
    kk = np.repeat(k.astype(np.int64), q.shape[1] // k.shape[1], axis=1)
    return np.einsum("bhid,bhjd->bhij", q.astype(np.int64), kk)


CASES = [(2, 4, 2, 5, 7, 16, 100), (1, 6, 2, 1, 130, 48, 20000), (1, 4, 4, 9, 9, 32, 2 ** 20),
         (2, 2, 1, 17, 33, 64, 16319)]


@pytest.mark.parametrize("b,hq,hkv,tq,tk,d,peak", CASES)
def test_reference_scores_are_the_int64_product(b, hq, hkv, tq, tk, d, peak):
    q, k = scores_case(b, hq, hkv, tq, tk, d, peak)
    acc = rs.spike_scores({}, q, k)
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc, int64_scores(q, k))


def test_spike_attention_is_attention_on_the_dequantised_inputs():
    rng = np.random.default_rng(3)
    q, k = scores_case(2, 4, 2, 6, 6, 8, 40)
    v = rng.integers(-127, 128, (2, 2, 6, 5), dtype=np.int8)
    q_vth = rng.random((2, 4, 6, 1)).astype(np.float32)
    k_scale, v_scale = (rng.random((2, 2, 6, 1)).astype(np.float32) for _ in range(2))
    mask = rng.random((2, 1, 6, 6)) > 0.2
    got = rs.spike_attention(BAND, rs.spike_scores({}, q, k), q_vth, k_scale, v, v_scale, mask)
    want = rf.FLOAT_KERNELS["attention"](BAND, q * q_vth, k * k_scale, v * v_scale, mask)
    assert got.dtype == np.float32 and got.shape == (2, 4, 6, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _scores_graph(q_dtype="int32", k_dtype="int8") -> Graph:
    g = Graph("scores", ["q", "k"], ["acc"],
              {"q": Value("q", (1, 2, 3, 32), q_dtype), "k": Value("k", (1, 1, 5, 32), k_dtype),
               "acc": Value("acc", (1, 2, 3, 5), "int32")},
              [Node("qk", "spike_scores", ["q", "k"], ["acc"])])
    return g


def test_integer_operands_are_checked():
    validate(_scores_graph())
    with pytest.raises(GraphError, match="operand k 'k' must be int8, got int32"):
        validate(_scores_graph(k_dtype="int32"))
    with pytest.raises(GraphError, match="operand q_counts 'q' must be int32"):
        validate(_scores_graph(q_dtype="float32"))


def test_scores_past_int32_are_refused():
    g = _scores_graph()
    feeds = {"q": np.full((1, 2, 3, 32), 2 ** 20, np.int32),
             "k": np.full((1, 1, 5, 32), 127, np.int8)}
    with pytest.raises(SbcError, match="node 'qk' .*exceeds int32"):
        reference.run(g, feeds)


# ---- the Triton score kernel --------------------------------------------------------------
@pytest.mark.skipif(INTERPRET or _gpu(), reason="the child (or the GPU) runs the kernels here")
def test_kernels_under_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-k", "kernel", __file__], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


def _device():
    import torch
    return torch.device("cpu" if INTERPRET else "cuda")


@kernel_test
@pytest.mark.parametrize("b,hq,hkv,tq,tk,d,peak", CASES)
def test_kernel_scores_equal_reference(b, hq, hkv, tq, tk, d, peak):
    import torch

    from sbcompile.runtime.triton import launch
    from sbcompile.runtime.triton.loader import kernels
    q, k = scores_case(b, hq, hkv, tq, tk, d, peak)
    dev = _device()
    got = launch.attention_scores(kernels(INTERPRET), torch.from_numpy(q).to(dev),
                                  torch.from_numpy(k).to(dev))
    np.testing.assert_array_equal(got.cpu().numpy(), rs.spike_scores({}, q, k))


@kernel_test
def test_kernel_attention_matches_reference():
    """The float part on the device (PyTorch, float32) agrees with the reference's float64."""
    import torch

    from sbcompile.runtime.triton.torch_ops import torch_kernel
    rng = np.random.default_rng(5)
    q, k = scores_case(1, 4, 2, 7, 7, 16, 300)
    acc = rs.spike_scores({}, q, k)
    v = rng.integers(-127, 128, (1, 2, 7, 16), dtype=np.int8)
    q_vth = (rng.random((1, 4, 7, 1)) * 0.01).astype(np.float32)
    k_scale, v_scale = ((rng.random((1, 2, 7, 1)) * 0.01).astype(np.float32) for _ in range(2))
    args = [acc, q_vth, k_scale, v, v_scale]
    dev = _device()
    tensors = [torch.from_numpy(a).to(dev) for a in args]
    got = torch_kernel("spike_attention", tensors)(BAND, *tensors).cpu().numpy()
    np.testing.assert_allclose(got, rs.spike_attention(BAND, *args), rtol=1e-5, atol=1e-6)
