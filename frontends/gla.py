"""Gated linear attention (GLA), SpikingBrain's linear-attention layer, in PyTorch.

ONNX has no GLA operator, so sbcompile defines one in its own domain:
``ai.sbcompile::GatedLinearAttention`` (opset ``ai.sbcompile`` version 1), inputs ``q, k, v, g``
in layout [B, T, H, D] and a float attribute ``scale``; the ONNX frontend maps it onto the IR op
``gla``. Its semantics (recurrent form, per head, S a K x V state):

    S_0 = 0,   S_t = diag(exp g_t) S_{t-1} + k_t^T v_t,   y_t = scale * q_t S_t

with g the log-space decay [B, T, H, K] (g <= 0 keeps the state bounded).

``gated_linear_attention`` runs that recurrence in plain (differentiable) torch; under
``torch.onnx.export(dynamo=True)`` it emits the custom node instead, so a model using it exports
with the ordinary exporter call and no translation table. ``GLABlock`` is the layer around it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DOMAIN = "ai.sbcompile"
OP_TYPE = "GatedLinearAttention"
DOMAIN_VERSION = 1


def gla_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """The GLA recurrence, step by step over T: the reference the ONNX node stands for."""
    batch, steps, heads, key_dim = q.shape
    state = q.new_zeros(batch, heads, key_dim, v.shape[-1])
    outputs = []
    for t in range(steps):
        state = g[:, t].exp().unsqueeze(-1) * state + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        outputs.append(scale * (q[:, t].unsqueeze(-2) @ state).squeeze(-2))
    return torch.stack(outputs, dim=1)


def _check_operands(q, k, v, g) -> None:
    if q.dim() != 4:
        raise ValueError(f"gated_linear_attention: q must be [B, T, H, K], got {list(q.shape)}")
    if k.shape != q.shape or g.shape != q.shape:
        raise ValueError(f"gated_linear_attention: k {list(k.shape)} and g {list(g.shape)} must "
                         f"have q's shape {list(q.shape)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"gated_linear_attention: v must be [B, T, H, V] matching q's "
                         f"{list(q.shape[:3])}, got {list(v.shape)}")


def gated_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                           scale: float | None = None) -> torch.Tensor:
    """GLA over [B, T, H, D] operands; ``scale`` defaults to K ** -0.5. Returns [B, T, H, V].

    During ONNX export this is one ``ai.sbcompile::GatedLinearAttention`` node."""
    _check_operands(q, k, v, g)
    scale = float(q.shape[-1] ** -0.5 if scale is None else scale)
    if torch.onnx.is_in_onnx_export():
        return torch.onnx.ops.symbolic(
            f"{DOMAIN}::{OP_TYPE}", (q, k, v, g), {"scale": scale}, dtype=v.dtype,
            shape=(*q.shape[:3], v.shape[-1]), version=DOMAIN_VERSION)
    return gla_recurrent(q, k, v, g, scale)


class GLABlock(nn.Module):
    """SpikingBrain's GLA layer (the flash-linear-attention GatedLinearAttention layer as
    SpikingBrain-7B configures it): q/k/v projections, ReLU feature map on q and k, a low-rank
    forget gate ``logsigmoid(W2 W1 x + b2) / gate_logit_normalizer`` per key channel, the GLA
    recurrence, a per-head RMSNorm of the output and o_proj. x [B, T, hidden] -> same shape."""

    def __init__(self, hidden_size: int, num_heads: int, key_dim: int | None = None,
                 value_dim: int | None = None, gate_low_rank_dim: int = 16,
                 gate_logit_normalizer: float = 16.0, norm_eps: float = 1e-5):
        super().__init__()
        key_dim = hidden_size // 2 if key_dim is None else key_dim
        value_dim = hidden_size if value_dim is None else value_dim
        if key_dim % num_heads or value_dim % num_heads:
            raise ValueError(f"GLABlock: key_dim {key_dim} and value_dim {value_dim} must be "
                             f"multiples of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_k_dim = key_dim // num_heads
        self.gate_logit_normalizer = gate_logit_normalizer
        self.q_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, value_dim, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, key_dim, bias=True))
        self.g_norm = nn.RMSNorm(value_dim // num_heads, eps=norm_eps)
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        heads = (batch, steps, self.num_heads, -1)
        q = F.relu(self.q_proj(x)).view(heads)
        k = F.relu(self.k_proj(x)).view(heads)
        v = self.v_proj(x).view(heads)
        g = (F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer).view(heads)
        o = gated_linear_attention(q, k, v, g, scale=self.head_k_dim ** -0.5)
        return self.o_proj(self.g_norm(o).reshape(batch, steps, -1))
