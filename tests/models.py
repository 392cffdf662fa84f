"""The test model zoo: small, deterministic PyTorch models of each family sbcompile must handle.

Each ``build_*()`` returns a ``ZooModel``: the module (eval mode, weights from a fixed seed), two
different input sets keyed by graph input name (``inputs`` for calibration or tracing, and
``eval_inputs`` for evaluation), and ``onnx_bytes()``, the model exported the way a user exports
it: ``torch.onnx.export(dynamo=True)`` with default settings (opset 20 in torch 2.13), through
``sbcompile.frontends.torch_frontend.export_module``. Models are kept small (hidden <= 64) so
every consumer's tests stay fast. Shapes are those of ``inputs``, except the axes a model lists
in ``dynamic_axes`` (BERT's batch and sequence), which the export leaves symbolic.

    zoo = build_decoder()
    graph = load_onnx(zoo.onnx_bytes())
    expected = zoo.torch_outputs(zoo.eval_inputs)

Import it as ``models`` with this folder on sys.path: lava-nc installs a ``tests`` package into
site-packages that shadows ``tests.models`` outside pytest.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sbcompile.frontends.gla import GLABlock
from sbcompile.frontends.torch_frontend import export_module


@dataclass
class ZooModel:
    """A zoo model with its inputs. ``inputs``/``eval_inputs`` map graph input names to arrays
    of the same shapes; ``output_names`` name the ONNX graph outputs in the module's return
    order; ``dynamic_axes`` (input name -> {axis: dim name}) marks the axes the ONNX export leaves
    symbolic, as users export sequence models."""

    name: str
    module: nn.Module
    inputs: dict[str, np.ndarray]
    eval_inputs: dict[str, np.ndarray]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] | None = None

    def torch_outputs(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The module's outputs on ``feeds``, keyed by output name."""
        with torch.no_grad():
            out = self.module(*(torch.from_numpy(feeds[k]) for k in self.inputs))
        outs = out if isinstance(out, tuple) else (out,)
        return {name: t.numpy() for name, t in zip(self.output_names, outs)}

    def onnx_bytes(self) -> bytes:
        """The serialized ONNX model. Exports cost seconds, so they are cached per process by
        everything that determines them: the weights, input shapes and names."""
        key = self._fingerprint()
        if key not in _EXPORTS:
            proto = export_module(self.module, tuple(self.inputs.values()), list(self.inputs),
                                  self.output_names, self.dynamic_axes)
            _EXPORTS[key] = proto.SerializeToString()
        return _EXPORTS[key]

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(repr((type(self.module).__qualname__, self.output_names,
                                      self.dynamic_axes)).encode())
        for name, array in self.inputs.items():
            digest.update(repr((name, array.shape, array.dtype.str)).encode())
        for name, tensor in self.module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        return digest.hexdigest()


_EXPORTS: dict[str, bytes] = {}


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with torch's RNG seeded, leaving the global RNG state as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make().eval()


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


# ---- shared building blocks --------------------------------------------------------------------
class RMSNorm(nn.Module):
    """RMSNorm written out as Llama/Qwen code does (exports as Pow/ReduceMean/Sqrt)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), the Llama/Qwen MLP."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _randomize_norms(module: nn.Module, gen: torch.Generator) -> None:
    """Give every norm's affine parameters non-trivial values, so a frontend that dropped them
    would be caught (fresh norms are all ones and zeros)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (RMSNorm, nn.RMSNorm, nn.LayerNorm)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
            if isinstance(m, nn.LayerNorm):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


# ---- MLP ---------------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.GELU(),
                                 nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_mlp() -> ZooModel:
    """Linear/ReLU/Linear/GELU/Linear, x [8, 16] -> logits [8, 10]."""
    module = _seeded(1, MLP)
    rng = np.random.default_rng(101)
    return ZooModel("mlp", module, {"x": _normal(rng, 8, 16)}, {"x": _normal(rng, 8, 16)},
                    ["logits"])


# ---- CNN ---------------------------------------------------------------------------------------
class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8),
            nn.MaxPool2d(2, ceil_mode=True),                      # 9x9 -> 5x5 (ceil)
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.PReLU(), nn.BatchNorm2d(16),
            nn.MaxPool2d(2, ceil_mode=True))                      # 5x5 -> 3x3 (ceil)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 3 * 3, 10), nn.Softmax(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _cnn() -> CNN:
    model = CNN()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # running statistics as after training
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            if isinstance(m, nn.PReLU):
                m.weight.copy_(0.1 + 0.3 * torch.rand(m.weight.shape, generator=gen))
    return model


def build_cnn() -> ZooModel:
    """Conv/BatchNorm/PReLU/MaxPool(ceil_mode), Conv/PReLU/BatchNorm/MaxPool(ceil_mode),
    Flatten, Linear, Softmax; x [2, 1, 9, 9] -> probs [2, 10]. The exporter folds the first
    BatchNorm into its Conv; the second, after PReLU, stays a BatchNormalization node."""
    module = _seeded(2, _cnn)
    rng = np.random.default_rng(102)
    return ZooModel("cnn", module, {"x": _normal(rng, 2, 1, 9, 9)},
                    {"x": _normal(rng, 2, 1, 9, 9)}, ["probs"])


# ---- a deep CNN whose most harmful layer is not the one with the largest local error ----------
class SensitiveCNN(nn.Module):
    """Six spiked layers. ``noisy`` reads a tensor with one channel 200x the others (the dynamic
    threshold follows that channel and rounds the rest away: a large error in isolation) but its
    output joins the trunk scaled by 0.02 (little reaches the logits). ``fragile`` makes two
    nearly equal halves whose difference the trunk carries on: a small error in its own output
    (weight rounding) that the subtraction turns into a large one downstream."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.noisy = nn.Conv2d(8, 8, 3, padding=1)
        self.fragile = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10, bias=False)
        gain = torch.ones(1, 8, 1, 1)
        gain[0, 0] = 200.0
        self.register_buffer("gain", gain)
        with torch.no_grad():
            self.noisy.weight[:, 0] /= 200.0
            gen = torch.Generator().manual_seed(7)
            half = self.fragile.weight[:8].clone()
            self.fragile.weight[8:] = half * (1 + 0.005 * torch.randn(half.shape, generator=gen))
            self.fragile.bias[8:] = self.fragile.bias[:8]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.body(F.relu(self.stem(x))))
        h = h + 0.02 * F.relu(self.noisy(h * self.gain))
        y = self.fragile(h)
        d = 50.0 * (y[:, :8] - y[:, 8:])
        z = F.relu(self.head(d))
        return self.fc(z.flatten(1))


def build_sensitive_cnn() -> ZooModel:
    """SensitiveCNN, x [16, 3, 8, 8] -> logits [16, 10]."""
    module = _seeded(9, SensitiveCNN)
    rng = np.random.default_rng(109)
    return ZooModel("sensitive_cnn", module, {"x": _normal(rng, 16, 3, 8, 8)},
                    {"x": _normal(rng, 16, 3, 8, 8)}, ["logits"])


# ---- BERT-style encoder ------------------------------------------------------------------------
def _erf_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU as BERT's original code writes it (exports as Erf)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class BertLayer(nn.Module):
    """Post-LN encoder layer with eager attention: matmul, additive mask, softmax, matmul."""

    def __init__(self, hidden: int, heads: int, intermediate: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=1e-12)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, h: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(h)), self._split(self.key(h)), self._split(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(h.shape)
        h = self.attn_norm(h + self.attn_out(ctx))
        return self.out_norm(h + self.output(_erf_gelu(self.intermediate(h))))


class BertEncoder(nn.Module):
    """Token + position embeddings (Gather), padding mask (Equal/Where/Expand), two layers, a
    tanh pooler on the first token. Returns (sequence output, pooled output)."""

    def __init__(self, vocab: int = 50, hidden: int = 32, heads: int = 4, layers: int = 2,
                 intermediate: int = 64, max_positions: int = 16):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.register_buffer("position_ids", torch.arange(max_positions).unsqueeze(0),
                             persistent=False)
        self.embed_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, intermediate) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        b, t = input_ids.shape
        positions = self.position_ids[:, :t]
        h = self.embed_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        keep = attention_mask[:, None, None, :].expand(b, 1, t, t)
        mask_bias = torch.where(keep == 0, torch.finfo(h.dtype).min, 0.0)
        for layer in self.layers:
            h = layer(h, mask_bias)
        return h, torch.tanh(self.pooler(h[:, 0]))


def bert_inputs(rng: np.random.Generator, lengths: list[int], steps: int, vocab: int = 50):
    """Token ids (0 past each sequence's length) and the matching attention mask, [B, steps]."""
    ids = rng.integers(1, vocab, size=(len(lengths), steps), dtype=np.int64)
    mask = (np.arange(steps)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return {"input_ids": np.where(mask == 1, ids, 0), "attention_mask": mask}


def _bert() -> BertEncoder:
    model = BertEncoder()
    _randomize_norms(model, torch.Generator().manual_seed(3))
    return model


def build_bert() -> ZooModel:
    """2-layer BERT-style encoder, hidden 32, 4 heads; input_ids/attention_mask [2, 8] int64
    (one sequence padded) -> hidden [2, 8, 32], pooled [2, 32]. Exported with symbolic batch
    and sequence axes, as BERT models are (this brings Shape/Slice/Concat into the graph)."""
    module = _seeded(3, _bert)
    rng = np.random.default_rng(103)
    axes = {0: "batch", 1: "sequence"}
    return ZooModel("bert", module, bert_inputs(rng, [8, 5], 8),
                    bert_inputs(rng, [6, 8], 8), ["hidden", "pooled"],
                    {"input_ids": axes, "attention_mask": axes})


# ---- decoder block (Llama/Qwen style) ----------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class DecoderBlock(nn.Module):
    """Pre-norm decoder layer: RMSNorm, GQA attention with rotary embeddings and a causal
    sliding-window mask (eager: matmul/softmax/matmul), RMSNorm, SwiGLU MLP; residuals.
    hidden_states [B, T, hidden] -> same shape."""

    def __init__(self, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                 intermediate: int = 96, window: int = 4, rope_theta: float = 10000.0):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.window = window
        self.input_norm = RMSNorm(hidden)
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        self.post_norm = RMSNorm(hidden)
        self.mlp = SwiGLU(hidden, intermediate)
        inv_freq = 1.0 / rope_theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rope(self, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(steps, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def _mask(self, steps: int) -> torch.Tensor:
        i = torch.arange(steps)[:, None]
        j = torch.arange(steps)[None, :]
        keep = (j <= i) & (j > i - self.window)
        return torch.where(keep, 0.0, torch.finfo(torch.float32).min)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self._rope(t)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        rep = self.heads // self.kv_heads  # GQA: repeat each kv head, as Llama's repeat_kv does
        k = k[:, :, None].expand(b, self.kv_heads, rep, t, self.head_dim).reshape(
            b, self.heads, t, self.head_dim)
        v = v[:, :, None].expand(b, self.kv_heads, rep, t, self.head_dim).reshape(
            b, self.heads, t, self.head_dim)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + self._mask(t)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o_proj(ctx.transpose(1, 2).reshape(b, t, -1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = hidden_states + self._attention(self.input_norm(hidden_states))
        return h + self.mlp(self.post_norm(h))


def _decoder() -> DecoderBlock:
    model = DecoderBlock()
    _randomize_norms(model, torch.Generator().manual_seed(4))
    return model


def build_decoder() -> ZooModel:
    """Llama/Qwen-style decoder block, hidden 64, 4 query / 2 kv heads, window 4;
    hidden_states [2, 12, 64] -> [2, 12, 64]."""
    module = _seeded(4, _decoder)
    rng = np.random.default_rng(104)
    return ZooModel("decoder", module, {"hidden_states": _normal(rng, 2, 12, 64)},
                    {"hidden_states": _normal(rng, 2, 12, 64)}, ["output"])


# ---- GLA block (SpikingBrain's linear-attention layer) -----------------------------------------
class GLADecoderBlock(nn.Module):
    """A SpikingBrain GLA decoder layer: RMSNorm, GLABlock, RMSNorm, SwiGLU; residuals."""

    def __init__(self, hidden: int = 64, heads: int = 4, intermediate: int = 96):
        super().__init__()
        self.input_norm = RMSNorm(hidden)
        self.attn = GLABlock(hidden, heads)
        self.post_norm = RMSNorm(hidden)
        self.mlp = SwiGLU(hidden, intermediate)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = hidden_states + self.attn(self.input_norm(hidden_states))
        return h + self.mlp(self.post_norm(h))


def _gla() -> GLADecoderBlock:
    model = GLADecoderBlock()
    _randomize_norms(model, torch.Generator().manual_seed(5))
    return model


def build_gla() -> ZooModel:
    """GLA decoder layer, hidden 64, 4 heads (key 8, value 16 per head), gate rank 16;
    hidden_states [2, 12, 64] -> [2, 12, 64]. Its ONNX holds an ai.sbcompile node, which
    onnxruntime cannot run: compare against ``torch_outputs``."""
    module = _seeded(5, _gla)
    rng = np.random.default_rng(105)
    return ZooModel("gla", module, {"hidden_states": _normal(rng, 2, 12, 64)},
                    {"hidden_states": _normal(rng, 2, 12, 64)}, ["output"])


BUILDERS: dict[str, Callable[[], ZooModel]] = {
    "mlp": build_mlp, "cnn": build_cnn, "bert": build_bert, "decoder": build_decoder,
    "gla": build_gla}
