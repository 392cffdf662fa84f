"""Decode (M = 1 and 8) on the six SpikingBrain-7B / Llama shapes: every path of ours against the
weight-only int8 GEMV (best of its configurations) and cuBLAS bf16 in one run. Encoding is inside every timing of ours; each
timing is a CUDA-graph replay over rotated weight copies. Writes ``results/triton_decode.json``.

Ours: ``dense`` (block sums + the dense-count GEMV quantising x itself; also its padded-tile
form, ``one_row=False``), ``gemm_split`` (the encoder's int8 digit planes + the split-K int8
GEMM) and ``event`` (encoder with compaction + event GEMV, with and without the id prefetch) at
the encoder's own k=3 density and at synthetic densities 0.3 and 0.1 (M <= 4).

    python benchmarks/triton_decode.py [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_baselines import W8_CONFIGS, bf16_linear, w8a16_linear  # noqa: E402
from triton_linear import (DEV, ENC, GROUP, SHAPES, Layer, activations,  # noqa: E402
                           encode_only, synthetic_rows)
from triton_timing import copies_for, copy_bandwidth_gbs, graph_time_us, machine  # noqa: E402

from sbcompile.runtime import reference_spike as ref  # noqa: E402
from sbcompile.runtime.triton import launch  # noqa: E402
from sbcompile.runtime.triton.loader import kernels  # noqa: E402


def ours(kern, x, layer, copy, path, group=GROUP, cfg=None):
    scale = layer.scale if group else layer.scale[:1]
    if path == "dense":
        enc = encode_only(kern, x, layer.k, "dense", None, group=group)
        return launch.dense_linear(kern, enc, layer.w[copy], group, scale, None,
                                   store_acc=False, decode=True, cfg=cfg)[1]
    if path == "gemm_split":
        enc = encode_only(kern, x, layer.k, "gemm", True, group=group)
        return launch.gemm_linear(kern, enc, layer.w[copy], group, scale, None,
                                  store_acc=False, decode=True, cfg=cfg)[1]
    enc = encode_only(kern, x, layer.k, "event", None, group=group)
    return launch.event_linear(kern, enc, layer.wt[copy], group, scale, None, store_acc=False,
                               decode=True, cfg=cfg)[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--small", action="store_true",
                    help="only the two small shapes, M=1, no event path")
    ap.add_argument("--event-only", action="store_true",
                    help="only the event path, M=1, on the two large shapes")
    args = ap.parse_args()
    kern = kernels(interpret=DEV != "cuda")
    rng = np.random.default_rng(0)
    t0 = time.time()
    result = {"machine": machine(), "method": __doc__.strip().splitlines()[0],
              "copy_gbs": round(copy_bandwidth_gbs(), 1), "rows": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def row(**r):
        result["rows"].append(r)
        print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
        result["seconds"] = round(time.time() - t0, 1)
        (out / "triton_decode.json").write_text(json.dumps(result, indent=1))

    shapes = SHAPES[:2] if args.small else SHAPES[2:4] if args.event_only else SHAPES
    for k_in, n_out in shapes:
        copies = copies_for(k_in * n_out * 2)
        layer = Layer(k_in, n_out, copies, rng)
        for m in (1, 8) if (k_in, n_out) in SHAPES[2:4] and not args.event_only else (1,):
            x32 = [torch.from_numpy(activations("gaussian", (m, k_in), rng)).to(DEV)
                   for _ in range(copies)]
            xbf = [x.to(torch.bfloat16) for x in x32]
            counts = ref.spike_encode({**ENC, "k": 3.0}, x32[0].cpu().numpy())[0]
            k3 = round(float(np.mean(counts != 0)), 3)
            base = dict(k=k_in, n=n_out, m=m)
            if args.event_only:
                xs = [torch.from_numpy(synthetic_rows(m, k_in, 0.3, rng)).to(DEV)
                      for _ in range(copies)]
                for d, rows_in in (("k3", x32), (0.3, xs)):
                    us = graph_time_us([lambda i=i: ours(kern, rows_in[i], layer, i, "event")
                                        for i in range(copies)])
                    row(**base, method="event_g128", prefetch=False, density=k3 if d == "k3"
                        else d, us=round(us, 2), note="split encoder")
                continue
            row(**base, method="bf16_cublas", us=round(graph_time_us(
                [lambda i=i: bf16_linear(xbf[i], layer.w_bf16[i]) for i in range(copies)]), 2))
            best = min((graph_time_us([lambda i=i, c=c: w8a16_linear(
                xbf[i], layer.w[i], layer.chan_scale, c) for i in range(copies)]), c)
                for c in W8_CONFIGS)
            row(**base, method="w8a16_triton", us=round(best[0], 2), cfg=best[1])
            for group in (GROUP, None):
                g = "g128" if group else "perchannel"
                auto = launch.dense_config(n_out, k_in, group)
                variants = {"auto": auto, "padded_tile": dataclasses.replace(auto, one_row=False),
                            "bn128": dataclasses.replace(auto, bn=128, num_warps=8)}
                for name, cfg in variants.items():
                    if name != "auto" and (group is None or m > 1):
                        continue
                    us = graph_time_us([lambda i=i: ours(kern, x32[i], layer, i, "dense",
                                                         group, cfg) for i in range(copies)])
                    row(**base, method=f"dense_{g}", variant=name, density=k3, us=round(us, 2),
                        cfg=cfg.__dict__)
                us = graph_time_us([lambda i=i: ours(kern, x32[i], layer, i, "gemm_split", group)
                                    for i in range(copies)])
                row(**base, method=f"gemm_split_{g}", density=k3, us=round(us, 2))
            for d in ("k3", 0.3, 0.1) if m <= launch.EVENT_MAX_ROWS and not args.small else ():
                xs = x32 if d == "k3" else [torch.from_numpy(synthetic_rows(m, k_in, d, rng)).to(
                    DEV) for _ in range(copies)]
                for prefetch in (True, False):
                    cfg = dataclasses.replace(launch.event_config(n_out, m), prefetch=prefetch)
                    us = graph_time_us([lambda i=i: ours(kern, xs[i], layer, i, "event", GROUP,
                                                         cfg) for i in range(copies)])
                    row(**base, method="event_g128", prefetch=prefetch,
                        density=k3 if d == "k3" else d, us=round(us, 2))
        del layer
        torch.cuda.empty_cache()
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
