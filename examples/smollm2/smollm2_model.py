"""SmolLM2-135M as a PyTorch module and as an sbcompile float graph.

``load_float`` reads the GGUF with ``transformers`` (the ``llm`` extra: transformers, gguf,
accelerate), dequantised to float32: a ``LlamaForCausalLM`` and its tokenizer. ``stand_in``
builds the same architecture (Llama: RMSNorm, RoPE, GQA with 3 query heads per KV head, SwiGLU,
tied embeddings) with few layers, a small width and random weights, in code, for CI.
``float_graph`` exports either to ONNX (dynamo, fixed context, symbolic batch) and imports it:
``input_ids [batch, context] -> logits [batch, context, vocab]``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import onnx
import torch
from torch import nn

from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.frontends.torch_frontend import export_module
from sbcompile.ir.graph import Graph

from fetch import GGUF, folder


class Logits(nn.Module):
    """input_ids -> logits of a causal LM, no cache (the export sees one full window)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, use_cache=False).logits


def load_tokenizer(cache: str | Path | None = None):
    """SmolLM2's tokenizer, from the cached GGUF."""
    from transformers import AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    return AutoTokenizer.from_pretrained(folder(cache), gguf_file=GGUF)


def load_float(cache: str | Path | None = None):
    """(LlamaForCausalLM in float32 eval mode, tokenizer) from the cached GGUF."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(cache)
    model = AutoModelForCausalLM.from_pretrained(folder(cache), gguf_file=GGUF,
                                                 dtype=torch.float32)
    return model.eval(), tokenizer


def stand_in(layers: int = 2, seed: int = 0, vocab: int = 512):
    """A random-weight LlamaForCausalLM shaped like SmolLM2 (GQA 9/3 heads, SwiGLU, tied
    embeddings, RoPE theta 1e5), narrow (hidden 144, head dim 16) and ``layers`` deep."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=144, intermediate_size=384,
                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-5,
                         rope_theta=1e5, tie_word_embeddings=True, attention_bias=False,
                         mlp_bias=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def float_graph(lm: nn.Module, context: int) -> Graph:
    """The LM as a float IR graph for windows of ``context`` tokens (traced at batch 2: a batch
    traced at 1 is specialised to 1)."""
    ids = torch.zeros(2, context, dtype=torch.int64)
    proto = export_module(Logits(lm), (ids,), ["input_ids"], ["logits"],
                          {"input_ids": {0: "batch"}})
    graph = load_onnx(named_by_module(proto))
    for i, node in enumerate(n for n in graph.nodes if n.op == "attention"):
        node.name = f"model.layers.{i}.self_attn"  # one fused attention per decoder layer
    return graph


def named_by_module(proto: onnx.ModelProto, prefix: str = "lm.", to: str = "") -> onnx.ModelProto:
    """Each projection's ONNX node renamed to its module's path (``model.layers.3.mlp.down_proj``,
    ``lm_head``), read from the exporter's name scopes: the IR layers, the report and
    per-layer settings then speak the model's own names. Paths under ``prefix`` (the
    wrapper's attribute) are written under ``to`` instead."""
    for node in proto.graph.node:
        if node.op_type != "MatMul":
            continue
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes and scopes[-1].startswith("linear") and scopes[-2].startswith(prefix):
            node.name = to + scopes[-2].removeprefix(prefix)
    return proto


class DecoderLayer(nn.Module):
    """Decoder layer ``index`` of a Llama LM alone: hidden states [batch, T, hidden] in, the
    layer's output out (RoPE at positions 0..T-1, causal attention), for the per-target
    exactness checks of one layer."""

    def __init__(self, lm: nn.Module, index: int):
        super().__init__()
        self.layer = lm.model.layers[index]
        self.rotary = lm.model.rotary_emb

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(hidden.shape[1]).unsqueeze(0)
        out = self.layer(hidden, position_embeddings=self.rotary(hidden, positions),
                         attention_mask=None, position_ids=positions)
        return out[0] if isinstance(out, tuple) else out


def layer_graph(lm: nn.Module, index: int, context: int, batch: int = 1) -> Graph:
    """Decoder layer ``index`` as a float IR graph ``hidden_in [batch, context, hidden] ->
    hidden_out`` with static shapes (what the per-target checks and exporters want), its
    projections and attention named as in ``float_graph``."""
    width = lm.config.hidden_size
    proto = export_module(DecoderLayer(lm, index), (torch.zeros(batch, context, width),),
                          ["hidden_in"], ["hidden_out"])
    graph = load_onnx(named_by_module(proto, "layer.", f"model.layers.{index}."))
    for node in graph.nodes:
        if node.op == "attention":
            node.name = f"model.layers.{index}.self_attn"
    return graph
