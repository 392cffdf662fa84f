"""Spiked linear layers on the GPU: the Triton event GEMV (decode) and int8 tensor-core GEMM
(batches) against cuBLAS bf16, a weight-only int8 Triton GEMV and torch._int_mm, on the same
random weights. Spike encoding and compaction are inside every timing of ours; every timing is a
CUDA-graph replay over rotated weight copies (L2 defeated). Prints tables, writes
``results/triton_linear.json``.

    python benchmarks/triton_linear.py [--quick] [--sweep] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_baselines import (W8_CONFIGS, bf16_linear, int_mm_padded, pad_rows,  # noqa: E402
                              w8a16_linear)
from triton_timing import copies_for, copy_bandwidth_gbs, graph_time_us, machine  # noqa: E402

from sbcompile.runtime import reference_spike as ref  # noqa: E402
from sbcompile.runtime.triton import launch  # noqa: E402
from sbcompile.runtime.triton.loader import kernels  # noqa: E402

SHAPES = [(3584, 3584), (3584, 512), (3584, 18944), (18944, 3584), (4096, 11008), (11008, 4096)]
BATCHES = [1, 4, 16, 512, 2048]
SYNTHETIC = [1.0, 0.5, 0.3, 0.1]
GROUP = 128
K_VALUES = (2, 3, 4)
TUNE_SHAPES = [(3584, 18944), (18944, 3584)]  # where the encoder form and GEMV tiles are tuned
TUNE_BATCH = 2048
DEV = "cuda"
ENC = dict(policy="dynamic", granularity="token", vth_min=1e-5, vth_max=1e4, max_count=None,
           safety_count=2 ** 20)


def activations(dist: str, shape, rng) -> np.ndarray:
    if dist == "gaussian":
        return rng.standard_normal(shape).astype(np.float32)
    if dist == "student_t3":
        return rng.standard_t(3, shape).astype(np.float32)
    return rng.laplace(size=shape).astype(np.float32)


def measured_densities(rows: int = 512, channels: int = 3584, seed: int = 0) -> dict:
    """Count-level density (nonzero counts / all counts) of the reference encoder at k = 2, 3, 4
    on activations drawn from three distributions."""
    rng = np.random.default_rng(seed)
    out = {}
    for dist in ("gaussian", "student_t3", "laplace"):
        x = activations(dist, (rows, channels), rng)
        for k in K_VALUES:
            counts, _ = ref.spike_encode({**ENC, "k": float(k)}, x)
            out[f"{dist}_k{k}"] = float(np.mean(counts != 0))
    return out


def synthetic_rows(m: int, channels: int, density: float, rng) -> np.ndarray:
    """Rows whose counts are nonzero on exactly round(density * K) random channels each."""
    x = np.zeros((m, channels), np.float32)
    nnz = round(density * channels)
    for r in range(m):
        ch = rng.choice(channels, nnz, replace=False)
        x[r, ch] = np.sign(rng.standard_normal(nnz)) * (1 + np.abs(rng.standard_normal(nnz)))
    return x


class Layer:
    """One linear layer's weights in every layout, with ``copies`` rotated copies."""

    def __init__(self, k_in: int, n_out: int, copies: int, rng, group: int | None = GROUP):
        self.k, self.n, self.group = k_in, n_out, group
        g = k_in // group if group else 1
        w = torch.from_numpy(rng.integers(-127, 128, (n_out, k_in), dtype=np.int8)).to(DEV)
        self.w = [w.clone() for _ in range(copies)]  # K-major int8 [N, K]
        self.wt = [w.t().contiguous() for _ in range(copies)]  # input-major W^T
        self.scale = torch.rand(g, n_out, device=DEV) * 1e-2
        self.chan_scale = self.scale[0].contiguous()
        self.w_bf16 = [(w.float() * self.scale[0][:, None]).to(torch.bfloat16)
                       for _ in range(copies)]
        self.w_host = w.cpu().numpy()


TUNED = {"split": {}, "event": {}, "dense": {}}  # filled by profile() and sweep() on the device


def split_for(k_in: int, m: int) -> bool:
    """The faster encoder form measured for the nearest profiled (K, batch class)."""
    if not TUNED["split"]:
        return True
    key = min(TUNED["split"], key=lambda km: (abs(km[0] - k_in), abs(km[1] - m)))
    return TUNED["split"][key]


def event_cfg_for(n_out: int):
    if not TUNED["event"]:
        return None
    return TUNED["event"][min(TUNED["event"], key=lambda n: abs(n - n_out))]


def encode_only(kern, x, k_in, path, split, k=3.0, group=GROUP, block=None):
    return launch.encode(kern, x, k_in, dynamic=True, k=k, vth_min=1e-5, vth_max=1e4,
                         limit=2 ** 20, threshold=None, path=path, unit=min(group or 128, 128),
                         split=split, block=block)


def ours(kern, x: torch.Tensor, layer: Layer, copy: int, path: str, cfg=None, group=GROUP,
         k: float = 3.0):
    m = x.shape[0]
    enc = encode_only(kern, x, layer.k, path, None if path == "dense" else
                      split_for(layer.k, m), k, group)
    if cfg is None and path == "event":
        cfg = event_cfg_for(layer.n)
    scale = layer.scale if group else layer.scale[:1]
    if path == "event":
        return launch.event_linear(kern, enc, layer.wt[copy], group, scale, None,
                                   store_acc=False, decode=True, cfg=cfg)[1]
    if path == "dense":
        cfg = cfg or TUNED["dense"].get((layer.k, layer.n, group))
        return launch.dense_linear(kern, enc, layer.w[copy], group, scale, None,
                                   store_acc=False, decode=True, cfg=cfg)[1]
    return launch.gemm_linear(kern, enc, layer.w[copy], group, scale, None, store_acc=False,
                              decode=True, cfg=cfg)[1]


def check_exact(kern, rng) -> list[dict]:
    """GPU integer results against the numpy reference, bit for bit."""
    results = []
    cases = [(1, 3584, 18944, "event"), (4, 18944, 3584, "event"), (1, 11008, 4096, "event"),
             (1, 3584, 18944, "dense"), (1, 18944, 3584, "dense"), (8, 11008, 4096, "dense"),
             (32, 3584, 3584, "gemm"), (32, 18944, 512, "gemm"), (40, 4096, 1024, "gemm"),
             (2048, 18944, 3584, "gemm")]
    for m, k_in, n_out, path in cases:
        for group in (GROUP, None):
            x = activations("student_t3", (m, k_in), rng) * 3
            x[0, :3] = [3e4, -5e5, 1e-30]
            counts_ref, vth_ref = ref.spike_encode({**ENC, "k": 3.0}, x)
            w = rng.integers(-127, 128, (n_out, k_in), dtype=np.int8)
            acc_ref = ref.spike_linear({"group_size": group}, counts_ref, w)
            g = k_in // group if group else 1
            scale = rng.random((g, n_out), dtype=np.float32) * 1e-2
            y_ref = ref.spike_decode({"layout": "linear"}, acc_ref, vth_ref, scale)
            enc = launch.encode(kern, torch.from_numpy(x).to(DEV), k_in, dynamic=True, k=3.0,
                                vth_min=1e-5, vth_max=1e4, limit=2 ** 20, threshold=None,
                                path=path, unit=min(group or 128, 128))
            wdev = torch.from_numpy(w).to(DEV)
            sdev = torch.from_numpy(scale).to(DEV)
            run = {"event": launch.event_linear, "dense": launch.dense_linear,
                   "gemm": launch.gemm_linear}[path]
            try:
                acc, y = run(kern, enc, wdev.t().contiguous() if path == "event" else wdev,
                             group, sdev, None, store_acc=True, decode=True)
                torch.cuda.synchronize()
            except Exception as exc:  # one failing case must not hide the others
                results.append({"m": m, "k": k_in, "n": n_out, "path": path, "group": group,
                                "error": repr(exc)[:300]})
                print(f"exact {path} M={m} {k_in}->{n_out} group={group}: ERROR {exc!r:.200}")
                continue
            ok = (np.array_equal(enc.vth.cpu().numpy(), vth_ref[:, 0])
                  and np.array_equal(enc.counts.cpu().numpy(), counts_ref)
                  and np.array_equal(acc.cpu().numpy(), acc_ref))
            yerr = float(np.max(np.abs(y.cpu().numpy() - y_ref)) / np.max(np.abs(y_ref)))
            results.append({"m": m, "k": k_in, "n": n_out, "path": path, "group": group,
                            "integers_exact": bool(ok), "y_max_rel_err": yerr})
            print(f"exact {path:5s} M={m:3d} {k_in}->{n_out} group={group}: "
                  f"{'EXACT' if ok else 'MISMATCH'}  y rel err {yerr:.1e}", flush=True)
    return results


def floor_us(nbytes: float, bw_gbs: float) -> float:
    return nbytes / bw_gbs / 1e3


def bench_shape(kern, k_in, n_out, batches, densities, bw, rng, rows_out, quick):
    copies = copies_for(k_in * n_out * 2)
    layer = Layer(k_in, n_out, copies, rng)
    for m in batches:
        x32 = [torch.from_numpy(activations("gaussian", (m, k_in), rng)).to(DEV)
               for _ in range(copies)]
        xbf = [x.to(torch.bfloat16) for x in x32]
        flops = 2.0 * m * k_in * n_out

        def row(method, us, density=None, weight_bytes=None, note=""):
            r = {"k": k_in, "n": n_out, "m": m, "method": method, "density": density,
                 "us": round(us, 2), "note": note}
            if weight_bytes is not None:
                fl = floor_us(weight_bytes, bw)
                r["floor_us"] = round(fl, 2)
                r["x_floor"] = round(us / fl, 2)
                r["weight_gbs"] = round(weight_bytes / us / 1e3, 1)
            if m >= 512:
                r["tflops"] = round(flops / us / 1e6, 1)
            rows_out.append(r)
            shown = density if density is not None else "-"
            print(f"{k_in:>5}->{n_out:<5} M={m:<4} {method:<22} d={shown:<6} {us:9.2f} us  "
                  f"{r.get('x_floor', '')} {r.get('tflops', '')} {note}", flush=True)
            return us

        row("bf16_cublas", graph_time_us([lambda i=i: bf16_linear(xbf[i], layer.w_bf16[i])
                                          for i in range(copies)]), weight_bytes=2 * k_in * n_out)
        if m <= 16:
            best = None
            for cfg in (W8_CONFIGS if not quick else W8_CONFIGS[:4]):  # best of, a fair baseline
                us = graph_time_us([lambda i=i, c=cfg: w8a16_linear(xbf[i], layer.w[i],
                                                                    layer.chan_scale, c)
                                    for i in range(copies)])
                if best is None or us < best[0]:
                    best = (us, cfg)
            row("w8a16_triton", best[0], weight_bytes=k_in * n_out, note=f"cfg {best[1]}")
        a8 = [torch.zeros((pad_rows(m), k_in), dtype=torch.int8, device=DEV).random_(-8, 8)
              for _ in range(copies)]
        row("torch_int_mm_padded", graph_time_us([lambda i=i: int_mm_padded(a8[i], layer.w[i])
                                                  for i in range(copies)]),
            weight_bytes=k_in * n_out, note=f"rows padded to {pad_rows(m)}")
        if m <= launch.EVENT_MAX_ROWS:
            for d in (densities if m == 1 else [1.0, 0.3, 0.1]):
                if isinstance(d, tuple):  # (distribution, k): the encoder's own density
                    (dist, k), xs = d, x32
                    label = f"{dist}_k{k}"
                else:
                    k, label = 3.0, d
                    xs = [torch.from_numpy(synthetic_rows(m, k_in, d, rng)).to(DEV)
                          for _ in range(copies)]
                counts = ref.spike_encode({**ENC, "k": float(k)}, xs[0].cpu().numpy())[0]
                union = float(np.mean(np.any(counts != 0, axis=0)))
                us = graph_time_us([lambda i=i: ours(kern, xs[i], layer, i, "event", k=k)
                                    for i in range(copies)])
                row("ours_event", us, density=label, weight_bytes=union * k_in * n_out,
                    note=f"union density {union:.3f}, count density "
                         f"{np.mean(counts != 0):.3f}")
        if m <= launch.DENSE_MAX_ROWS:
            for group in (GROUP, None):
                counts = ref.spike_encode({**ENC, "k": 3.0}, x32[0].cpu().numpy())[0]
                row("ours_dense" + ("_g128" if group else "_perchannel"),
                    graph_time_us([lambda i=i, g=group: ours(kern, x32[i], layer, i, "dense",
                                                             group=g)
                                   for i in range(copies)]), density="gaussian_k3",
                    weight_bytes=k_in * n_out, note=f"count density {np.mean(counts != 0):.3f}")
        else:
            row("ours_int8_gemm_g128", graph_time_us([lambda i=i: ours(kern, x32[i], layer, i,
                                                                       "gemm")
                                                      for i in range(copies)]),
                weight_bytes=k_in * n_out)
        if m >= 512:
            row("ours_int8_gemm_perchannel",
                graph_time_us([lambda i=i: ours(kern, x32[i], layer, i, "gemm", group=None)
                               for i in range(copies)]), weight_bytes=k_in * n_out)
    torch.cuda.empty_cache()


def profile(kern, rng) -> list[dict]:
    """Where the time goes: each encoder form alone (the one-program form at several block
    sizes), then the event GEMV and the int8 GEMM alone on inputs encoded beforehand."""
    out = []
    for k_in, n_out in TUNE_SHAPES:
        layer = Layer(k_in, n_out, 2, rng)
        for m in (1, TUNE_BATCH):
            xs = [torch.from_numpy(activations("gaussian", (m, k_in), rng)).to(DEV)
                  for _ in range(4)]
            forms = [("split", True, None)] + ([("single", False, b)
                                                for b in (1024, 2048, 4096, 8192)]
                                               if m == 1 else [])
            paths = ("event", "gemm", "dense") if m == 1 else ("gemm",)
            best = {}
            for path in paths:
                for name, split, block in (forms if path != "dense" else [("block_sums", None,
                                                                          None)]):
                    us = graph_time_us([lambda i=i: encode_only(kern, xs[i], k_in, path, split,
                                                                block=block)
                                        for i in range(4)], replays=10)
                    best.setdefault(path, []).append((us, split))
                    out.append({"stage": f"encode_{path}", "k": k_in, "m": m, "form": name,
                                "block": block, "us": round(us, 2)})
                    print(f"profile encode {path:5s} K={k_in} M={m} {name} {block}: {us:.2f} us",
                          flush=True)
            TUNED["split"][(k_in, m)] = min(best["event" if m == 1 else "gemm"])[1]
        for d in (0.3, 1.0):
            xs = [torch.from_numpy(synthetic_rows(1, k_in, d, rng)).to(DEV) for _ in range(2)]
            encs = [encode_only(kern, x, k_in, "event", True) for x in xs]
            us = graph_time_us([lambda i=i: launch.event_linear(
                kern, encs[i], layer.wt[i], GROUP, layer.scale, None, store_acc=False,
                decode=True) for i in range(2)], replays=10)
            out.append({"stage": "event_gemv_only", "k": k_in, "n": n_out, "density": d,
                        "us": round(us, 2)})
            print(f"profile event gemv only {k_in}->{n_out} d={d}: {us:.2f} us", flush=True)
        xs = [torch.from_numpy(activations("gaussian", (TUNE_BATCH, k_in), rng)).to(DEV)
              for _ in range(2)]
        encs = [encode_only(kern, x, k_in, "gemm", True) for x in xs]
        for group in (GROUP, None):
            scale = layer.scale if group else layer.scale[:1]
            us = graph_time_us([lambda i=i: launch.gemm_linear(
                kern, encs[i], layer.w[i], group, scale, None, store_acc=False, decode=True)
                for i in range(2)], replays=5)
            out.append({"stage": "int8_gemm_only", "k": k_in, "n": n_out, "m": TUNE_BATCH,
                        "group": group, "us": round(us, 2),
                        "tops": round(2 * TUNE_BATCH * k_in * n_out / us / 1e6, 1)})
            print(f"profile int8 gemm only {k_in}->{n_out} M={TUNE_BATCH} group={group}: "
                  f"{us:.2f} us",
                  flush=True)
        torch.cuda.empty_cache()
    return out


def sweep(kern, bw, rng) -> list[dict]:
    """Launch configurations of the event GEMV alone (M=1, density 0.3), best kept per shape."""
    out = []
    for k_in, n_out in TUNE_SHAPES:
        copies = copies_for(k_in * n_out)
        layer = Layer(k_in, n_out, copies, rng)
        xs = [torch.from_numpy(synthetic_rows(1, k_in, 0.3, rng)).to(DEV) for _ in range(copies)]
        encs = [encode_only(kern, x, k_in, "event", True) for x in xs]
        best = None
        for bn in (128, 256):
            for prefetch in (True, False):
                for gps in (4, 8):
                    for nw, ns in ((4, 2),):
                        cfg = launch.EventConfig(bn=bn, e=64, gps=gps, num_warps=nw,
                                                 num_stages=ns, prefetch=prefetch)
                        try:
                            us = graph_time_us([lambda i=i: launch.event_linear(
                                kern, encs[i], layer.wt[i], GROUP, layer.scale, None,
                                store_acc=False, decode=True, cfg=cfg)
                                for i in range(copies)], replays=10)
                        except Exception as exc:  # a config that does not compile
                            print("event cfg failed", cfg, repr(exc)[:200])
                            continue
                        out.append({"k": k_in, "n": n_out, "density": 0.3, "cfg": cfg.__dict__,
                                    "us": round(us, 2),
                                    "floor_us": round(0.3 * k_in * n_out / bw / 1e3, 2)})
                        print("sweep event", k_in, n_out, cfg, f"{us:.2f}", flush=True)
                        if best is None or us < best[0]:
                            best = (us, cfg)
        TUNED["event"][n_out] = best[1]
        torch.cuda.empty_cache()
    return out


def sweep_dense(kern, bw, rng, shapes) -> list[dict]:
    """Launch configurations of the dense-count GEMV (encoder block sums included), M=1, on
    every shape, groups of 128 and per channel; the best is kept per shape and grouping."""
    out = []
    for k_in, n_out in shapes:
        copies = copies_for(k_in * n_out)
        layer = Layer(k_in, n_out, copies, rng)
        xs = [torch.from_numpy(activations("gaussian", (1, k_in), rng)).to(DEV)
              for _ in range(copies)]
        for group in (GROUP, None):
            best = None
            auto = launch.dense_config(n_out, k_in, group)
            for bn in (32, 64, 128):
                for split in sorted({1, 4, auto.split}):
                    for nw, ns in ((4, 4), (8, 4)):
                        cfg = launch.DenseConfig(bn=bn, bk=auto.bk, split=split, num_warps=nw,
                                                 num_stages=ns)
                        try:
                            us = graph_time_us([lambda i=i: ours(kern, xs[i], layer, i, "dense",
                                                                 cfg=cfg, group=group)
                                                for i in range(copies)], replays=10)
                        except Exception as exc:  # a config that does not compile
                            print("dense cfg failed", cfg, repr(exc)[:200])
                            continue
                        out.append({"k": k_in, "n": n_out, "group": group, "cfg": cfg.__dict__,
                                    "auto": cfg == auto, "us": round(us, 2),
                                    "floor_us": round(k_in * n_out / bw / 1e3, 2)})
                        if best is None or us < best[0]:
                            best = (us, cfg)
            print("sweep dense", k_in, n_out, group, "best", best, flush=True)
            TUNED["dense"][(k_in, n_out, group)] = best[1]
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true",
                    help="batches only on the two tuning shapes, fewer baseline configurations")
    ap.add_argument("--sweep", action="store_true",
                    help="also sweep the dense-count GEMV's launch configurations")
    ap.add_argument("--sweep-event", action="store_true",
                    help="also sweep the event GEMV's launch configurations")
    ap.add_argument("--profile", action="store_true", help="also time each stage alone")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    kern = kernels(interpret=DEV != "cuda")
    rng = np.random.default_rng(0)
    t0 = time.time()
    result = {"machine": machine(), "method": __doc__.strip().splitlines()[0]}
    result["copy_gbs"] = round(copy_bandwidth_gbs(), 1)
    print("machine", result["machine"], "copy GB/s", result["copy_gbs"], flush=True)
    result["densities"] = measured_densities()
    print("count-level densities", result["densities"], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():  # after every phase, so a run cut short keeps what it measured
        result["seconds"] = round(time.time() - t0, 1)
        (out / "triton_linear.json").write_text(json.dumps(result, indent=1))

    if not args.skip_check:
        result["numpy"] = np.__version__
        result["exactness"] = check_exact(kern, rng)
        save()
    if args.check_only:
        return
    if args.sweep or args.profile:
        result["profile"] = profile(kern, rng)
        result["encoder_split"] = {f"{k}x{m}": v for (k, m), v in TUNED["split"].items()}
        save()
    if args.sweep:
        result["sweep_dense"] = sweep_dense(kern, result["copy_gbs"], rng, SHAPES)
        save()
    if args.sweep_event:
        result["sweep"] = sweep(kern, result["copy_gbs"], rng)
        result["tuned"] = {"split": {f"{k}x{m}": v for (k, m), v in TUNED["split"].items()},
                           "event": {n: c.__dict__ for n, c in TUNED["event"].items()},
                           "dense": {f"{k}x{n}_g{g}": c.__dict__
                                     for (k, n, g), c in TUNED["dense"].items()}}
        save()
    densities = SYNTHETIC + [("gaussian", k) for k in K_VALUES]
    result["rows"] = []
    for k_in, n_out in SHAPES:
        batches = BATCHES if not args.quick else [1, 4, 2048] if (k_in, n_out) in TUNE_SHAPES \
            else [1]
        bench_shape(kern, k_in, n_out, batches, densities, result["copy_gbs"], rng,
                    result["rows"], args.quick)
        save()
    print(f"done in {result['seconds']} s")


if __name__ == "__main__":
    main()
