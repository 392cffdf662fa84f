"""GPU decode of the SmolLM2-135M architecture: bf16 against torchao's W8A8 (int8 dynamic
activations, int8 weights) against the spiking form (per-token dynamic-threshold counts, k = 3,
times int8 weights: the spikingbrain numerics), at batch 1, 8 and 32, in one run on one card.

The model is the project's own float module of SmolLM2's architecture (30 Llama layers, hidden
576, GQA 9/3, SwiGLU 1536, tied 49152-token embeddings) with a static KV cache; one decode step
is captured in a CUDA graph and replayed. Weights are random (seeded), scaled like the real
model's: decode speed depends on shapes, not values, and the real 135 M weights cannot travel to
the GPU machine in one transfer. Spiking linears store int8 weights per output channel (no input
groups: one int8 GEMM per projection, ``torch._int_mm``) and clamp counts to int8: a speed
proxy, not the exact numerics (the compile of the real model measures counts up to 3576 at the
down_proj inputs of a few layers, where massive activations live; exact kernels split such counts
into base-128 digits). The lm_head stays bf16 in all three (torchao's filter excludes it too).
Writes benchmarks/results/smollm2_decode.json.

    python benchmarks/smollm2_decode.py [--device cuda] [--layers 30] [--steps 200]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM, VOCAB, THETA = 576, 1536, 9, 3, 64, 49152, 1e5


class SpikeLinear(nn.Module):
    """y = V_th * (W_q @ s) * w_scale with s = round(x / V_th), V_th = mean|x| / k per token."""

    def __init__(self, linear: nn.Linear, k: float = 3.0):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
        self.register_buffer("w", torch.round(w / scale).to(torch.int8))  # [N, K]
        self.register_buffer("w_scale", scale.t().to(torch.float32))
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        vth = (x.abs().mean(-1, keepdim=True) / self.k).clamp(1e-5, 1e4)
        counts = torch.round(x / vth).clamp(-127, 127).to(torch.int8)
        rows = counts.shape[0]
        if rows < 32:  # _int_mm takes more than 16 rows (torchao pads likewise)
            counts = F.pad(counts, (0, 0, 0, 32 - rows))
        acc = torch._int_mm(counts, self.w.t())[:rows]  # a column-major [K, N] operand
        y = acc.float() * self.w_scale * vth
        return y.to(torch.bfloat16).reshape(*shape[:-1], -1)


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(HIDDEN, HEADS * HEAD_DIM, bias=False)
        self.k = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=False)
        self.v = nn.Linear(HIDDEN, KV_HEADS * HEAD_DIM, bias=False)
        self.o = nn.Linear(HEADS * HEAD_DIM, HIDDEN, bias=False)
        self.gate = nn.Linear(HIDDEN, INTER, bias=False)
        self.up = nn.Linear(HIDDEN, INTER, bias=False)
        self.down = nn.Linear(INTER, HIDDEN, bias=False)
        self.norm1 = nn.RMSNorm(HIDDEN, eps=1e-5)
        self.norm2 = nn.RMSNorm(HIDDEN, eps=1e-5)


class Decoder(nn.Module):
    """SmolLM2's architecture with a static KV cache: ``step(tokens [B], pos [])``."""

    def __init__(self, layers: int, batch: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList(Layer() for _ in range(layers))
        self.norm = nn.RMSNorm(HIDDEN, eps=1e-5)
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.embed.weight
        shape = (layers, batch, KV_HEADS, max_len, HEAD_DIM)
        self.register_buffer("k_cache", torch.zeros(shape))
        self.register_buffer("v_cache", torch.zeros(shape))
        inv = 1.0 / THETA ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
        angles = torch.outer(torch.arange(max_len).float(), inv)
        self.register_buffer("cos", torch.cat([angles.cos()] * 2, -1))
        self.register_buffer("sin", torch.cat([angles.sin()] * 2, -1))
        self.register_buffer("positions", torch.arange(max_len))

    def rope(self, x, pos):
        cos, sin = self.cos[pos], self.sin[pos]
        half = torch.cat([-x[..., HEAD_DIM // 2:], x[..., :HEAD_DIM // 2]], -1)
        return x * cos + half * sin

    def step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)[:, None]  # [B, 1, H]
        b = h.shape[0]
        keep = (self.positions <= pos)[None, None, None]
        for i, layer in enumerate(self.layers):
            x = layer.norm1(h)
            q = self.rope(layer.q(x).view(b, 1, HEADS, HEAD_DIM).transpose(1, 2), pos)
            k = self.rope(layer.k(x).view(b, 1, KV_HEADS, HEAD_DIM).transpose(1, 2), pos)
            v = layer.v(x).view(b, 1, KV_HEADS, HEAD_DIM).transpose(1, 2)
            self.k_cache[i].index_copy_(2, pos.view(1), k.to(self.k_cache.dtype))
            self.v_cache[i].index_copy_(2, pos.view(1), v.to(self.v_cache.dtype))
            a = F.scaled_dot_product_attention(q, self.k_cache[i], self.v_cache[i],
                                               attn_mask=keep, enable_gqa=True)
            h = h + layer.o(a.transpose(1, 2).reshape(b, 1, HEADS * HEAD_DIM))
            x = layer.norm2(h)
            h = h + layer.down(F.silu(layer.gate(x)) * layer.up(x))
        return self.lm_head(self.norm(h))[:, 0]


def build(kind: str, layers: int, batch: int, max_len: int, device: str) -> Decoder:
    torch.manual_seed(0)
    model = Decoder(layers, batch, max_len)
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.ndim == 2:
            nn.init.normal_(p, std=1 / math.sqrt(p.shape[1]))
    model = model.to(device, torch.bfloat16).eval()
    not_head = lambda m, fqn: isinstance(m, nn.Linear) and "lm_head" not in fqn  # noqa: E731
    if kind == "torchao_w8a8":
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=not_head)
    elif kind == "spiking_k3":
        for layer in model.layers:
            for name in ("q", "k", "v", "o", "gate", "up", "down"):
                setattr(layer, name, SpikeLinear(getattr(layer, name)))
    return model


@torch.no_grad()
def tokens_per_second(model: Decoder, batch: int, steps: int, device: str) -> float:
    tokens = torch.zeros(batch, dtype=torch.long, device=device)
    pos = torch.zeros((), dtype=torch.long, device=device)
    for _ in range(3):
        model.step(tokens, pos)
    if device.startswith("cuda"):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model.step(tokens, pos)
        run = graph.replay
    else:
        run = lambda: model.step(tokens, pos)  # noqa: E731
    for _ in range(5):
        run()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(steps):
        pos.fill_(i % 256)
        run()
    sync()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--kinds", default="bf16,torchao_w8a8,spiking_k3")
    args = ap.parse_args()
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for kind in args.kinds.split(","):
            model = build(kind, args.layers, batch, 256, args.device)
            tps = tokens_per_second(model, batch, args.steps, args.device)
            rows.append({"batch": batch, "kind": kind, "tokens_per_s": tps})
            print(f"batch {batch:3} {kind:14} {tps:10.1f} tokens/s", flush=True)
            del model
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "smollm2_decode.json").write_text(json.dumps(
        {"device": device, "torch": torch.__version__, "layers": args.layers,
         "steps": args.steps, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
