"""End to end: a SpikingBrain-7B-shaped decoder stack (random weights) decoding batches of 1, 8
and 32, the spiking Triton runtime against the same stack in bf16 PyTorch, both as CUDA-graph
replays of one decode step. Prints tokens/s, writes ``results/triton_e2e.json``.

Shapes are SpikingBrain-7B's: hidden 3584, 28 query heads and 4 KV heads of 128, SwiGLU MLP of
18944; layers alternate gated linear attention (GLA; k/v heads shared by 7 query heads, gate
low rank 3584 -> 16 -> 512, per-head RMSNorm) and sliding-window softmax attention over a KV
cache. Spiked: the inputs of q/k/v (one encode, one GEMV over the concatenated weights), o,
gate/up (likewise) and down; the rest (norms, attention, the GLA recurrence, the gate's low-rank
projections) runs in PyTorch: bf16 caches in both stacks, the spiking stack's residual stream in
float32. RoPE is left out of both.

Spiked layers run on each path that takes the batch: the dense-count GEMV and the split-K int8
GEMM up to 16 rows, the event GEMV up to 4, the int8 GEMM above.

    python benchmarks/triton_e2e.py [--layers 4] [--context 1024] [--batches 1 8 32] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_timing import graph_time_us, machine  # noqa: E402

from sbcompile.runtime.triton import launch  # noqa: E402
from sbcompile.runtime.triton.loader import kernels  # noqa: E402

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, MLP = 3584, 28, 4, 128, 18944
GROUP = 128


def gla_step(q, k, v, g, state):
    """One recurrent GLA step: S = diag(exp g) S + k^T v, o = q S; [B, H, D] tensors, state
    [B, H, D, D]. Uses fla's fused_recurrent_gla when installed."""
    try:
        from fla.ops.gla import fused_recurrent_gla
    except ImportError:
        state.mul_(g.exp()[..., None]).add_(k[..., None] * v[..., None, :])
        return torch.einsum("bhk,bhkv->bhv", q, state)
    o, new_state = fused_recurrent_gla(q[:, None], k[:, None], v[:, None], gk=g[:, None],
                                       scale=1.0, initial_state=state,
                                       output_final_state=True)
    state.copy_(new_state)
    return o[:, 0]


class Stack:
    """Weights and state of the decoder stack, in one dtype, with linears given by ``linear``."""

    def __init__(self, layers: int, context: int, dtype, gen, batch: int = 1):
        def w(n, k):
            return torch.randint(-127, 128, (n, k), generator=gen, device="cuda",
                                 dtype=torch.int8)
        self.layers = []
        for i in range(layers):
            layer = {"qkv": w(HIDDEN + 2 * KV_HEADS * HEAD_DIM, HIDDEN), "o": w(HIDDEN, HIDDEN),
                     "gate_up": w(2 * MLP, HIDDEN), "down": w(HIDDEN, MLP),
                     "g1": torch.randn(16, HIDDEN, device="cuda", dtype=dtype) * 0.02,
                     "g2": torch.randn(KV_HEADS * HEAD_DIM, 16, device="cuda", dtype=dtype) * 0.2,
                     "gla": i % 2 == 0}
            if layer["gla"]:
                layer["state"] = torch.zeros(batch, HEADS, HEAD_DIM, HEAD_DIM, device="cuda",
                                             dtype=torch.float32)
            else:
                shape = (batch, KV_HEADS, context, HEAD_DIM)
                layer["kc"] = torch.randn(shape, device="cuda", dtype=dtype)
                layer["vc"] = torch.randn(shape, device="cuda", dtype=dtype)
            self.layers.append(layer)
        self.dtype = dtype


def mixer(layer, q, k, v, x_dtype, h):
    """Attention (SWA layers, the cache's last token replaced by the new k/v) or a GLA step."""
    b = q.shape[0]
    rep = HEADS // KV_HEADS
    if layer["gla"]:
        qh = F.relu(q.view(b, HEADS, HEAD_DIM)).float()
        kh = F.relu(k.view(b, KV_HEADS, HEAD_DIM)).repeat_interleave(rep, 1).float()
        vh = v.view(b, KV_HEADS, HEAD_DIM).repeat_interleave(rep, 1).float()
        g = F.logsigmoid(F.linear(F.linear(h.to(layer["g1"].dtype), layer["g1"]), layer["g2"]))
        g = g / 16
        gh = g.view(b, KV_HEADS, HEAD_DIM).repeat_interleave(rep, 1).float()
        o = gla_step(qh, kh, vh, gh, layer["state"])
        o = F.rms_norm(o, (HEAD_DIM,))
        return o.reshape(b, HIDDEN).to(x_dtype)
    layer["kc"][:, :, -1] = k.view(b, KV_HEADS, HEAD_DIM)
    layer["vc"][:, :, -1] = v.view(b, KV_HEADS, HEAD_DIM)
    o = F.scaled_dot_product_attention(q.view(b, HEADS, 1, HEAD_DIM).to(layer["kc"].dtype),
                                       layer["kc"], layer["vc"], enable_gqa=True)
    return o.reshape(b, HIDDEN)


def decode_step(stack: Stack, x, linear):
    for layer in stack.layers:
        h = F.rms_norm(x, (HIDDEN,))
        qkv = linear(h, layer, "qkv")
        q, k, v = qkv.split([HIDDEN, KV_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM], dim=-1)
        x = x + linear(mixer(layer, q, k, v, x.dtype, h), layer, "o")
        h = F.rms_norm(x, (HIDDEN,))
        gate, up = linear(h, layer, "gate_up").split([MLP, MLP], dim=-1)
        x = x + linear(F.silu(gate) * up, layer, "down")
    return x


def spiked_linear(kern, path: str):
    """The spiked linear of the stack on one path: encode h, then the layer's kernel."""
    def linear(h, layer, name):
        w, wt, scale = layer[name + "_w"], layer[name + "_wt"], layer[name + "_scale"]
        enc = launch.encode(kern, h.float().contiguous(), w.shape[1], dynamic=True, k=3.0,
                            vth_min=1e-5, vth_max=1e4, limit=2 ** 20, threshold=None,
                            path=path, unit=GROUP)
        run = {"event": launch.event_linear, "dense": launch.dense_linear,
               "gemm": launch.gemm_linear}[path]
        return run(kern, enc, wt if path == "event" else w, GROUP, scale, None,
                   store_acc=False, decode=True)[1]
    return linear


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    kern = kernels(interpret=False)
    result = {"machine": machine(), "layers": args.layers, "context": args.context, "runs": []}
    try:
        import fla  # noqa: F401
        result["gla"] = f"fla {fla.__version__} fused_recurrent_gla"
    except ImportError:
        result["gla"] = "torch recurrent step (fla not installed)"
    for batch in args.batches:
        gen = torch.Generator(device="cuda").manual_seed(0)
        bf = Stack(args.layers, args.context, torch.bfloat16, gen, batch)
        for layer in bf.layers:
            for name in ("qkv", "o", "gate_up", "down"):
                layer[name + "_bf16"] = (layer[name].float() * 1e-3).to(torch.bfloat16)
                del layer[name]
        x_bf = torch.randn(batch, HIDDEN, device="cuda", dtype=torch.bfloat16)
        bf_us = graph_time_us([lambda: decode_step(bf, x_bf, lambda h, layer, name: F.linear(
            h, layer[name + "_bf16"]))], replays=20)
        del bf
        # the spiking stack keeps bf16 caches and gate weights like the baseline; its residual
        # stream and the encoders' inputs are float32
        sp = Stack(args.layers, args.context, torch.bfloat16, gen, batch)
        for layer in sp.layers:
            for name in ("qkv", "o", "gate_up", "down"):
                w = layer.pop(name)
                layer[name + "_w"] = w
                layer[name + "_wt"] = w.t().contiguous()
                layer[name + "_scale"] = torch.full((w.shape[1] // GROUP, w.shape[0]), 1e-3,
                                                    device="cuda")
        x_sp = torch.randn(batch, HIDDEN, device="cuda")
        paths = ["gemm", "dense"] + (["event"] if batch <= launch.EVENT_MAX_ROWS else []) \
            if batch <= launch.DENSE_MAX_ROWS else ["gemm"]
        for path in paths:
            sp_us = graph_time_us([lambda: decode_step(sp, x_sp, spiked_linear(kern, path))],
                                  replays=20)
            run = {"batch": batch, "path": path, "bf16_us_per_step": round(bf_us, 1),
                   "spiking_us_per_step": round(sp_us, 1),
                   "bf16_tokens_per_s": round(batch * 1e6 / bf_us, 1),
                   "spiking_tokens_per_s": round(batch * 1e6 / sp_us, 1),
                   "speedup": round(bf_us / sp_us, 2)}
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
        del sp
        torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "triton_e2e.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
