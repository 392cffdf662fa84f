"""The integer attention on the GPU: exactness of the score kernel (``spike_scores``) on the
device and its time against the float attention a user would run instead, at SpikingBrain-7B's
SWA shapes (28 query heads, 4 KV heads, head dim 128, window 4096).

Exactness: the kernel's int32 scores against the reference kernel (numpy) and against a float64
product on the device (exact: every partial sum is an integer below 2^53), for decode and
prefill shapes and for query counts past 127 and 16383 (the multi-digit path); then one
SpikingBrain-shaped SWA layer compiled under preset ``spikingbrain`` and run on the Triton
target, its counts, accumulators and scores compared with the reference bit for bit.
Timing (CUDA-graph replays; decode rotates copies of K/V so the L2 never holds them):
- ``scores_int8``: our score kernel, int32 query counts x int8 K -> int32 scores;
- ``scores_bf16``: the float score product it replaces, bf16 q @ K^T (torch.matmul, GQA as one
  batched product per KV head);
- ``attention_ours``: scores + the float rest (``spike_attention`` through PyTorch in float32:
  rescale, band, softmax, probabilities x dequantised int8 V), unfused, timed by plain device
  events (its band mask is built on the host);
- ``sdpa_bf16``: torch's scaled_dot_product_attention in bf16 (fused flash attention, GQA).
Writes ``results/triton_attention.json``.

    python benchmarks/triton_attention.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_timing import copies_for, graph_time_us, machine  # noqa: E402

from sbcompile.runtime import reference_spike as ref  # noqa: E402
from sbcompile.runtime.triton import launch  # noqa: E402
from sbcompile.runtime.triton.loader import kernels  # noqa: E402
from sbcompile.runtime.triton.torch_ops import torch_kernel  # noqa: E402

DEV = torch.device("cuda")
HQ, HKV, D, WINDOW = 28, 4, 128, 4096
CASES = [  # (name, batch, query tokens, keys)
    ("decode_b1", 1, 1, 4096), ("decode_b32", 32, 1, 4096),
    ("prefill_2048", 1, 2048, 2048), ("prefill_4096", 1, 4096, 4096)]
SWEEP = [(16, 64, 4), (16, 128, 4), (64, 64, 4), (64, 128, 4), (128, 128, 8), (128, 64, 4)]


def query_counts(b: int, tq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SpikingBrain's query counts of a normal q (V_th = mean|q| / 3 per token and head)."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = torch.randn((b, HQ, tq, D), generator=g, device=DEV)
    vth = q.abs().mean(-1, keepdim=True) / 3.0
    return torch.round(q / vth).to(torch.int32), vth


def int8(shape, seed: int) -> torch.Tensor:
    g = torch.Generator(device=DEV).manual_seed(seed)
    return torch.randint(-127, 128, shape, generator=g, device=DEV, dtype=torch.int8)


def float64_scores(qc: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    kk = k.to(torch.float64).repeat_interleave(qc.shape[1] // k.shape[1], dim=1)
    return torch.matmul(qc.to(torch.float64), kk.transpose(-1, -2))


def check_exact(kern) -> list[dict]:
    rows = []
    for name, b, tq, tk in CASES + [("peaks_2^20", 1, 64, 300)]:
        qc, _ = query_counts(b, tq, 1)
        if name.startswith("peaks"):
            qc.view(-1)[:4] = torch.tensor([2 ** 20, -(2 ** 20), 16384, -300], device=DEV)
            qc = qc.clamp(-(2 ** 20), 2 ** 20)
        k = int8((b, HKV, tk, D), 2)
        if name.startswith("peaks"):
            k = k.clamp(-1, 1)  # the scores of 2^20 counts stay inside int32
        got = launch.attention_scores(kern, qc, k)
        want = float64_scores(qc, k)
        same_device = bool(torch.equal(got.to(torch.float64), want))
        same_ref = None
        if b * tq * tk <= 64 * 4096:
            np.testing.assert_array_equal(got.cpu().numpy(),
                                          ref.spike_scores({}, qc.cpu().numpy(), k.cpu().numpy()))
            same_ref = True
        assert same_device, name
        rows.append({"case": name, "shape": [b, HQ, tq, tk], "peak": int(qc.abs().max()),
                     "equal_float64_product": same_device, "equal_reference": same_ref})
        print(f"exact {name}: device product {same_device}, reference {same_ref}")
    return rows


def check_layer() -> dict:
    """An SWA layer compiled under spikingbrain on the Triton target against the reference."""
    import sbcompile
    from sbcompile.streaming import StackShape, decoder_layer
    shape = StackShape(layers=2, hidden=256, heads=8, kv_heads=2, head_dim=32, intermediate=512,
                       window=16)
    graph = decoder_layer(shape, 1, 32)
    x = np.random.default_rng(0).standard_normal((2, 32, shape.hidden)).astype(np.float32)
    model = sbcompile.compile(graph, preset="spikingbrain", calib={"hidden_in": x},
                              overrides={"targets": "triton"})
    want = model.run({"hidden_in": x})
    got = model.run({"hidden_in": x}, target="triton", interpret=False)
    for name, counts in want.counts.items():
        np.testing.assert_array_equal(got.counts[name], counts, err_msg=name)
    err = float(np.abs(got.outputs["hidden_out"] - want.outputs["hidden_out"]).max())
    scores = [v for v in want.counts if v.endswith("scores")]
    print(f"layer: {len(want.counts)} integer values equal (scores: {scores}); max |dy| {err:.2e}")
    return {"integer_values_equal": len(want.counts), "scores": scores, "max_abs_output_diff": err}


def timed(calls, replays=20) -> float:
    return round(graph_time_us(calls, replays=replays), 2)


def event_time_us(calls, rounds: int = 5) -> float:
    """Median microseconds per call between device events, without a CUDA graph (the float
    path builds its band mask on the host, which a graph capture cannot hold)."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    samples = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for call in calls:
            call()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / len(calls))
    return round(float(np.median(samples)), 2)


def time_case(kern, name, b, tq, tk) -> dict:
    qc, vth = query_counts(b, tq, 3)
    n_copies = copies_for(2 * b * HKV * tk * D * 2) if tq == 1 else 2  # bf16 K and V
    k8 = [int8((b, HKV, tk, D), 10 + i) for i in range(n_copies)]
    v8 = [int8((b, HKV, tk, D), 100 + i) for i in range(n_copies)]
    scale = torch.rand((b, HKV, tk, 1), device=DEV) * 0.01
    kb = [k.to(torch.bfloat16) for k in k8]
    vb = [v.to(torch.bfloat16) for v in v8]
    qb = (qc.to(torch.float32) * vth).to(torch.bfloat16)
    rep = HQ // HKV
    qg = qb.reshape(b, HKV, rep * tq, D)
    band = {"scale": D ** -0.5, "causal": int(tq > 1), "window": WINDOW}
    attend = torch_kernel("spike_attention", [])

    def sweep_best():
        best = None
        for bm, bn, warps in SWEEP:
            cfg = launch.ScoresConfig(bm, bn, 128, warps)
            us = timed([lambda i=i: launch.attention_scores(kern, qc, k8[i], cfg)
                        for i in range(n_copies)], replays=10)
            if best is None or us < best[0]:
                best = (us, [bm, bn, warps])
        return best

    default_cfg = launch.scores_config(rep * tq, tk, D)
    r = {"case": name, "batch": b, "tq": tq, "tk": tk, "heads": [HQ, HKV, D],
         "copies": n_copies, "default_tiles": [default_cfg.bm, default_cfg.bn,
                                               default_cfg.num_warps]}
    r["scores_int8_us"] = timed([lambda i=i: launch.attention_scores(kern, qc, k8[i])
                                 for i in range(n_copies)])
    r["scores_int8_best_us"], r["best_tiles"] = sweep_best()
    r["scores_bf16_us"] = timed([lambda i=i: torch.matmul(qg, kb[i].transpose(-1, -2))
                                 for i in range(n_copies)])
    r["sdpa_bf16_us"] = timed([lambda i=i: F.scaled_dot_product_attention(
        qb, kb[i], vb[i], is_causal=tq > 1, enable_gqa=True) for i in range(n_copies)])
    r["attention_ours_us"] = event_time_us([lambda i=i: attend(
        band, launch.attention_scores(kern, qc, k8[i]), vth, scale, v8[i], scale)
        for i in range(n_copies)])
    flops = 2 * b * HQ * tq * tk * D
    r["scores_int8_tops"] = round(flops / r["scores_int8_best_us"] / 1e6, 1)
    r["kv_bytes_int8"] = 2 * b * HKV * tk * D
    for base in ("scores_bf16", "sdpa_bf16"):
        r[f"{base}_over_scores_int8"] = round(r[f"{base}_us"] / r["scores_int8_best_us"], 2)
    r["sdpa_bf16_over_attention_ours"] = round(r["sdpa_bf16_us"] / r["attention_ours_us"], 3)
    print(json.dumps(r))
    return r


def guarded(fn, *args):
    """fn(*args), or the error it raised (one failing part leaves the others' results)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 (recorded in the results, not hidden)
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    kern = kernels(False)
    start = time.time()
    result = {"machine": machine(), "exact": check_exact(kern)}
    result["layer"] = guarded(check_layer)
    result["timing"] = [guarded(time_case, kern, *case) for case in CASES]
    result["seconds"] = round(time.time() - start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "triton_attention.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
