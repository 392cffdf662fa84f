"""SpikingBrain-7B's architecture in miniature: a decoder LM whose layers alternate gated linear
attention (even layers, ``GLABlock``) and sliding-window softmax attention (odd layers: GQA,
RoPE, causal window), each followed by a SwiGLU MLP, with pre-RMSNorms and residuals; token
embeddings in, a final RMSNorm and an untied lm_head out. input_ids [B, T] -> logits [B, T, V].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sbcompile.frontends.gla import GLABlock


@dataclass(frozen=True)
class TinyConfig:
    vocab: int = 128            # ASCII code points
    hidden: int = 128
    layers: int = 4             # GLA, SWA, GLA, SWA (SpikingBrain-7B: 28)
    heads: int = 4              # SWA query heads and GLA heads
    kv_heads: int = 2           # SWA key/value heads (GQA)
    intermediate: int = 256     # SwiGLU width
    window: int = 32            # SWA window (tokens)
    context: int = 64           # the fixed context length the model is exported for
    rope_theta: float = 10000.0

    def to_json(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    """RMSNorm as Qwen writes it (exports as Pow/ReduceMean/Sqrt, lowered to rms_norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class SlidingWindowAttention(nn.Module):
    """Qwen-style GQA attention (q/k/v with bias, RoPE) under a causal sliding-window mask,
    written eagerly (matmul, mask, softmax, matmul) so it lowers to one IR ``attention``."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.heads, self.kv_heads = cfg.heads, cfg.kv_heads
        self.head_dim = cfg.hidden // cfg.heads
        self.window = cfg.window
        self.q_proj = nn.Linear(cfg.hidden, cfg.heads * self.head_dim)
        self.k_proj = nn.Linear(cfg.hidden, cfg.kv_heads * self.head_dim)
        self.v_proj = nn.Linear(cfg.hidden, cfg.kv_heads * self.head_dim)
        self.o_proj = nn.Linear(cfg.heads * self.head_dim, cfg.hidden, bias=False)
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, self.head_dim, 2).float()
                                            / self.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[2], dtype=torch.float32, device=x.device)
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return x * emb.cos() + _rotate_half(x) * emb.sin()

    def _mask(self, steps: int, device: torch.device) -> torch.Tensor:
        i = torch.arange(steps, device=device)[:, None]
        j = torch.arange(steps, device=device)[None, :]
        keep = (j <= i) & (j > i - self.window)
        return torch.where(keep, 0.0, torch.finfo(torch.float32).min)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, d = x.shape
        rep = self.heads // self.kv_heads
        return x[:, :, None].expand(b, self.kv_heads, rep, t, d).reshape(b, self.heads, t, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = self._rope(q), self._repeat_kv(self._rope(k))
        scores = (torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
                  + self._mask(t, x.device))
        ctx = torch.matmul(torch.softmax(scores, dim=-1), self._repeat_kv(v))
        return self.o_proj(ctx.transpose(1, 2).reshape(b, t, -1))


class DecoderLayer(nn.Module):
    """Pre-norm layer: x + attn(norm(x)), then h + mlp(norm(h)); attn is GLA or SWA."""

    def __init__(self, cfg: TinyConfig, linear_attention: bool):
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden)
        self.attn = (GLABlock(cfg.hidden, cfg.heads) if linear_attention
                     else SlidingWindowAttention(cfg))
        self.post_norm = RMSNorm(cfg.hidden)
        self.mlp = SwiGLU(cfg.hidden, cfg.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attn(self.input_norm(x))
        return h + self.mlp(self.post_norm(h))


class TinySpikingBrain(nn.Module):
    """The inter-layer 1:1 GLA/SWA hybrid: layer i is GLA when i is even, SWA when odd."""

    def __init__(self, cfg: TinyConfig = TinyConfig()):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i % 2 == 0) for i in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        return self.lm_head(self.norm(h))
