"""The float ops of a spiking graph on the GPU, through PyTorch: the ones a transformer or MLP
runs on every token. They follow docs/OPS.md in float32 (the reference computes in float64 and
rounds once, so results agree to float32 rounding). Ops not listed here run on the numpy
reference kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sbcompile.ir.ops import attention_keep


def _norm_dims(axis: int, rank: int) -> list[int]:
    return list(range(axis % rank, rank))


def _layer_norm(a, x, scale, bias=None):
    dims = _norm_dims(a["axis"], x.dim())
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + a["epsilon"]) * scale
    return y if bias is None else y + bias


def _rms_norm(a, x, scale=None):
    dims = _norm_dims(a["axis"], x.dim())
    y = x / torch.sqrt((x * x).mean(dim=dims, keepdim=True) + a["epsilon"])
    return y if scale is None else y * scale


def _linear(a, x, w, b=None):
    return F.linear(x, w, b)


def _spike_attention(a, acc, q_vth, k_scale, v, v_scale, mask=None):
    """docs/OPS.md spike_attention in float32: the logits from the int32 scores, then the
    band, mask and softmax, times the dequantised int8 values (GQA by repeating KV heads)."""
    rep = acc.shape[1] // k_scale.shape[1]
    ks = k_scale.repeat_interleave(rep, dim=1).transpose(-1, -2)
    logits = acc.to(torch.float32) * (q_vth * a["scale"]) * ks
    keep = torch.from_numpy(attention_keep(acc.shape[2], acc.shape[3], a["causal"],
                                           a["window"])).to(acc.device)
    if mask is not None and mask.dtype == torch.bool:
        keep = keep & mask
    elif mask is not None:
        logits = logits + mask
    logits = logits.masked_fill(~keep, float("-inf"))
    p = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # a row with every key masked: zeros
    values = (v.to(torch.float32) * v_scale).repeat_interleave(rep, dim=1)
    return torch.matmul(p, values)


MIXED_OPS = {"spike_attention": _spike_attention}  # integer operands by design (int8 V)


def _is_float(*ts) -> bool:
    return all(t.is_floating_point() for t in ts)


TORCH_OPS = {
    "linear": _linear,
    "matmul": lambda a, x, y: torch.matmul(x, y),
    "add": lambda a, x, y: x + y,
    "sub": lambda a, x, y: x - y,
    "mul": lambda a, x, y: x * y,
    "relu": lambda a, x: torch.relu(x),
    "sigmoid": lambda a, x: torch.sigmoid(x),
    "tanh": lambda a, x: torch.tanh(x),
    "silu": lambda a, x: F.silu(x),
    "gelu": lambda a, x: F.gelu(x, approximate=a["approximate"]),
    "softmax": lambda a, x: torch.softmax(x, dim=a["axis"]),
    "layer_norm": _layer_norm,
    "rms_norm": _rms_norm,
    "identity": lambda a, x: x,
    "neg": lambda a, x: -x,
}
# Ops whose integer forms have semantics of their own (wrapping, promotion): torch only on floats.
FLOAT_ONLY = {"add", "sub", "mul", "matmul", "linear", "neg"}


def torch_kernel(op: str, inputs: list):
    """The torch implementation of ``op`` for these inputs, or None (use the reference)."""
    if op in MIXED_OPS:
        return MIXED_OPS[op]
    fn = TORCH_OPS.get(op)
    tensors = [t for t in inputs if t is not None]
    if fn is None or (op in FLOAT_ONLY and not _is_float(*tensors)):
        return None
    if any(t.dtype != torch.float32 for t in tensors):
        return None
    return fn
