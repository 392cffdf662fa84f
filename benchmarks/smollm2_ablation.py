"""Where SmolLM2-135M's perplexity goes under ``spikingbrain``: the preset's numerics emulated
in PyTorch on the float model (hooks, seconds per run instead of the reference interpreter's
minutes), spiking one group of layers at a time, and each projection's local error.

Emulated (FACTS.md section 1): the input of each projection -> counts round(x / V_th), V_th =
mean|x| / k per token, clipped to [1e-5, 1e4], read back as counts * V_th; weights symmetric
int8 per output channel and group of 128 inputs; attention (attention_quantize): the RoPE'd
query spiked per token and head, K and V int8 per token and head. The lm_head stays float.
The emulation agrees with the compiled graph on the reference to about half a point of
perplexity (16 held-out windows: +13.8 % emulated, +13.2 % compiled). Text: 16 windows of 64
tokens from King Lear and Julius Caesar (neither calibration nor evaluation text of
smollm2_fidelity.py). Writes benchmarks/results/smollm2_ablation.json.

    python benchmarks/smollm2_ablation.py
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "smollm2"))
RESULTS = ROOT / "benchmarks" / "results"
GROUPS = {"q/k/v": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
          "gate/up": ("gate_proj", "up_proj"), "down": ("down_proj",)}


def spike(x: torch.Tensor, k: float) -> torch.Tensor:
    vth = (x.abs().mean(-1, keepdim=True) / k).clamp(1e-5, 1e4)
    return torch.round(x / vth) * vth


def int8_groups(w: torch.Tensor, group: int = 128) -> torch.Tensor:
    out = torch.empty_like(w)
    for j in range(0, w.shape[1], group):
        block = w[:, j:j + group]
        scale = (block.abs().amax(1, keepdim=True) / 127).clamp_min(1e-12)
        out[:, j:j + group] = torch.round(block / scale) * scale
    return out


def int8_per_token(x: torch.Tensor) -> torch.Tensor:
    scale = (x.abs().amax(-1, keepdim=True) / 127).clamp_min(1e-8)
    return torch.round(x / scale).clamp(-127, 127) * scale


class Emulation:
    """Which projections and attentions of ``lm`` run spiked, at which k."""

    def __init__(self, lm):
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        self.lm, self.hooks = lm, []
        self.linears = {n: m for n, m in lm.named_modules()
                        if isinstance(m, torch.nn.Linear) and n != "lm_head"}
        self.weights = {n: m.weight.data.clone() for n, m in self.linears.items()}
        self.attention_k: float | None = None

        def attention(module, q, k, v, mask, **kw):
            if self.attention_k is not None:
                q, k, v = spike(q, self.attention_k), int8_per_token(k), int8_per_token(v)
            return sdpa_attention_forward(module, q, k, v, mask, **kw)

        AttentionInterface.register("sbcompile_emulation", attention)
        lm.config._attn_implementation = "sbcompile_emulation"

    def set(self, spiked=lambda name: False, k: float = 3.0, attention_k: float | None = None):
        for h in self.hooks:
            h.remove()
        self.hooks.clear()
        for name, module in self.linears.items():
            on = spiked(name)
            module.weight.data = int8_groups(self.weights[name]) if on else \
                self.weights[name].clone()
            if on:
                self.hooks.append(module.register_forward_pre_hook(
                    lambda _, args: (spike(args[0], k),)))
        self.attention_k = attention_k


@torch.no_grad()
def logits(lm, ids: np.ndarray) -> torch.Tensor:
    ids = torch.from_numpy(ids)
    return torch.cat([lm(input_ids=ids[i:i + 8], use_cache=False).logits
                      for i in range(0, len(ids), 8)])


@torch.no_grad()
def local_snr(lm, emulation: Emulation, ids: np.ndarray, k: float = 3.0) -> dict:
    """Each projection's output SNR (dB) with its own input spiked and weights int8, on the
    float model's activations, and the input's median max|x| / mean|x| per token."""
    emulation.set()
    rows, hooks = {}, []
    for name, module in emulation.linears.items():
        w = emulation.weights[name]

        def hook(_, args, name=name, w=w):
            x = args[0]
            y, yq = F.linear(x, w), F.linear(spike(x, k), int8_groups(w))
            snr = 10 * math.log10(float((y ** 2).sum() / ((yq - y) ** 2).sum()))
            peak = float((x.abs().amax(-1) / x.abs().mean(-1)).median())
            rows[name] = {"snr_db": snr, "max_over_mean": peak}
        hooks.append(module.register_forward_pre_hook(hook))
    logits(lm, ids[:8])
    for h in hooks:
        h.remove()
    return rows


def main() -> int:
    from fetch import is_fetched
    from smollm2_model import load_float
    from text import windows

    if not is_fetched():
        print("error: SmolLM2 is not cached: run python examples/smollm2/fetch.py",
              file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    lm, tokenizer = load_float()
    text = windows(tokenizer, ("lear", "julius_caesar"), 16, 64)
    labels = torch.from_numpy(text["labels"]).reshape(-1)
    emulation = Emulation(lm)

    def loss(out):
        return float(F.cross_entropy(out.reshape(-1, out.shape[-1]), labels))

    emulation.set()
    reference = logits(lm, text["input_ids"])
    base = loss(reference)
    runs = {"spikingbrain k=3": dict(spiked=lambda n: True, attention_k=3.0),
            "projections only": dict(spiked=lambda n: True),
            "attention only": dict(attention_k=3.0),
            **{f"only {g}": dict(spiked=lambda n, p=p: n.endswith(p)) for g, p in GROUPS.items()},
            "attention query k=5": dict(spiked=lambda n: True, attention_k=5.0),
            **{f"k={k:g} everywhere": dict(spiked=lambda n: True, k=k, attention_k=k)
               for k in (8.0, 12.0)}}
    rows = []
    for label, setting in runs.items():
        emulation.set(**setting)
        out = logits(lm, text["input_ids"])
        rows.append({"run": label, "perplexity_rel": math.exp(loss(out) - base) - 1,
                     "agreement": float((out.argmax(-1) == reference.argmax(-1)).float().mean())})
        print(f"{label:24} {rows[-1]['perplexity_rel']:+.2%}  agreement "
              f"{rows[-1]['agreement']:.4f}", flush=True)
    snr = local_snr(lm, emulation, text["input_ids"])
    for suffix in (p for group in GROUPS.values() for p in group):
        values = [r["snr_db"] for n, r in snr.items() if n.endswith(suffix)]
        print(f"{suffix:10} local SNR {np.mean(values):5.1f} dB (min {np.min(values):.1f})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "smollm2_ablation.json").write_text(json.dumps(
        {"float_perplexity": math.exp(base), "predictions": int(labels.numel()), "runs": rows,
         "local": snr}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
