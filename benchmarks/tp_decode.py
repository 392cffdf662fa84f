"""Tensor-parallel spiking decode of a SpikingBrain-7B-shaped stack (28 layers; q 3584 -> 3584,
k/v 3584 -> 512, o 3584 -> 3584, gate/up 3584 -> 18944, down 18944 -> 3584; int8 weights in
groups of 128, random) on W GPUs through NCCL, one process a GPU (torchrun), with
``sbcompile.runtime.tensor_parallel``: rank 0 spike-encodes each projection input (the Triton
encoder, counts bounded by 127 as calibrated count bounds make them) and broadcasts the int8
counts; q, k, v, gate, up split by output channel (Triton int8 GEMM, decoded in the kernel,
gathered), o and down by input channel (int32 partial accumulators all-reduced, then decoded).
Norms, SwiGLU and residuals run in torch on every rank; the token mixer (attention / GLA over
the cache) is left out, the query projection standing in for its output, so the timing is that
of the projections, which carry the weights decode must stream. Rank 0 writes
``tp_decode_w{W}.json`` (tokens/s, ms a step) under ``--out``.

    NCCL_NVLS_ENABLE=0 torchrun --standalone --nproc_per_node 2 benchmarks/tp_decode.py
    torchrun --standalone --nproc_per_node 2 benchmarks/tp_decode.py --small --check  # CPU
``--small --check`` runs tiny shapes on the CPU (gloo, the Triton interpreter) and asserts every
projection's accumulators equal the reference integer path on the whole weight.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from sbcompile.runtime import reference_spike as ref
from sbcompile.runtime.tensor_parallel import (broadcast_counts, column_linear_triton,
                                               make_shard, row_linear_triton, wire_encoding)
from sbcompile.runtime.triton import launch
from sbcompile.runtime.triton.loader import kernels

LIMIT = 127
FULL = dict(layers=28, hidden=3584, kv=512, intermediate=18944, group=128)
SMALL = dict(layers=2, hidden=64, kv=32, intermediate=96, group=32)
SPLITS = {"q": "column", "k": "column", "v": "column", "o": "row", "gate": "column",
          "up": "column", "down": "row"}


def shapes(d: dict) -> dict[str, tuple[int, int]]:
    h, i = d["hidden"], d["intermediate"]
    return {"q": (h, h), "k": (d["kv"], h), "v": (d["kv"], h), "o": (h, h), "gate": (i, h),
            "up": (i, h), "down": (h, i)}


class Projection:
    """One projection's shard on this rank (and, with ``keep_full``, the whole int8 weight)."""

    def __init__(self, n_out, k, group, split, seed, rank, world, device, keep_full):
        gen = torch.Generator(device=device).manual_seed(seed)
        full = torch.randint(-127, 128, (n_out, k), generator=gen, dtype=torch.int8,
                             device=device)
        groups = k // group
        self.scale = (1 + 0.1 * torch.rand((groups, n_out), generator=gen, device=device)) \
            / (127 * k ** 0.5)
        self.shard = make_shard(np.empty((n_out, k), np.int8), group, split, rank, world)
        s = self.shard
        self.weight = (full[s.lo:s.hi] if split == "column" else full[:, s.lo:s.hi]).contiguous()
        self.full = full.cpu().numpy() if keep_full else None
        self.n_out, self.k, self.split = n_out, k, split
        del full


def encode_and_broadcast(kern, x: torch.Tensor):
    """Rank 0's Triton encoder on x [rows, K]; on every rank its counts as they came over the
    wire: (counts, digit planes, vth, peak)."""
    rows, k = x.shape
    counts = vth = None
    if dist.get_rank() == 0:
        enc = launch.encode(kern, x.contiguous(), k, dynamic=True, k=3.0, vth_min=1e-5,
                            vth_max=1e4, limit=LIMIT, threshold=None, path="gemm")
        counts, vth = enc.counts, enc.vth.reshape(rows, 1)
    return broadcast_counts(counts, vth, (rows, k), (rows, 1), LIMIT, x.device)


def project(kern, wire, p: Projection, world: int, check: bool) -> torch.Tensor:
    if p.split == "column":
        acc, y = column_linear_triton(kern, wire_encoding(*wire), p.shard, p.weight, p.scale,
                                      None, p.n_out, world, keep_acc=check)
    else:
        acc, y = row_linear_triton(kern, wire_encoding(*wire, p.shard.lo, p.shard.hi),
                                   p.shard, p.weight, p.scale, None)
    if check and dist.get_rank() == 0:
        expected = ref.spike_linear({"group_size": p.shard.group}, wire[0].cpu().numpy(),
                                    p.full)
        np.testing.assert_array_equal(acc.cpu().numpy(), expected)
    return y


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6)


def decode_step(kern, layers: list[dict], x: torch.Tensor, world: int, check: bool):
    for proj in layers:
        enc = encode_and_broadcast(kern, rms_norm(x))
        q = project(kern, enc, proj["q"], world, check)
        project(kern, enc, proj["k"], world, check)
        project(kern, enc, proj["v"], world, check)
        x = x + project(kern, encode_and_broadcast(kern, q), proj["o"], world, check)
        enc = encode_and_broadcast(kern, rms_norm(x))
        act = F.silu(project(kern, enc, proj["gate"], world, check)) * \
            project(kern, enc, proj["up"], world, check)
        x = x + project(kern, encode_and_broadcast(kern, act), proj["down"], world, check)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny shapes on the CPU (gloo)")
    ap.add_argument("--check", action="store_true",
                    help="assert every accumulator against the reference integer path")
    ap.add_argument("--rows", type=int, default=1, help="tokens decoded together")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    gpu = not args.small
    local = int(os.environ.get("LOCAL_RANK", 0))
    if gpu:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local) if gpu else torch.device("cpu")
    kern = kernels(interpret=not gpu)
    dims = SMALL if args.small else FULL
    t0 = time.perf_counter()
    layers = [{name: Projection(n, k, dims["group"], SPLITS[name], 16 * i + j, rank, world,
                                device, args.check)
               for j, (name, (n, k)) in enumerate(shapes(dims).items())}
              for i in range(dims["layers"])]
    setup_s = time.perf_counter() - t0
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn((args.rows, dims["hidden"]), generator=gen, device=device)
    for _ in range(args.warmup):
        decode_step(kern, layers, x, world, args.check)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    sync()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        y = decode_step(kern, layers, x, world, args.check)
    sync()
    elapsed = time.perf_counter() - t0
    out = y.float().cpu().numpy()
    if rank == 0:
        weights = sum(p.n_out * p.k for layer in layers for p in layer.values())
        result = {"world": world, "rows": args.rows, "steps": args.steps, "layers":
                  dims["layers"], "small": args.small, "checked": args.check,
                  "ms_per_step": elapsed / args.steps * 1e3,
                  "tokens_per_s": args.rows * args.steps / elapsed,
                  "int8_weight_bytes": weights, "setup_s": setup_s,
                  "output_finite": bool(np.isfinite(out).all()),
                  "device": torch.cuda.get_device_name(local) if gpu else platform.processor(),
                  "peak_gpu_bytes": torch.cuda.max_memory_allocated(local) if gpu else None,
                  "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"),
                  "torch": torch.__version__, "date": str(date.today())}
        print(json.dumps(result))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        tag = "small_" if args.small else ""
        (Path(args.out) / f"tp_decode_{tag}w{world}_m{args.rows}.json").write_text(
            json.dumps(result, indent=1) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
