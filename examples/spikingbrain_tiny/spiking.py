"""The tiny model through sbcompile: ONNX export (dynamic batch, fixed context), compile under
the ``spikingbrain`` preset with embeddings and lm_head in float, and the shipped data sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sbcompile.artifact import Artifact
from sbcompile.config import make_config
from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.frontends.torch_frontend import export_module
from sbcompile.ir.graph import Graph
from sbcompile.lm import lm_head
from sbcompile.npz import load_npz
from sbcompile.pipeline import compile_graph
from weights import load_model

HERE = Path(__file__).resolve().parent


def float_graph() -> Graph:
    """The trained model as a float IR graph: input_ids [batch, context] -> logits."""
    model = load_model()
    ids = torch.zeros(1, model.cfg.context, dtype=torch.int64)
    proto = export_module(model, (ids,), ["input_ids"], ["logits"],
                          {"input_ids": {0: "batch"}})
    return load_onnx(proto)


def data(name: str) -> dict[str, np.ndarray]:
    """``calib`` (input_ids [16, T]) or ``heldout`` (input_ids, labels [128, T])."""
    return load_npz(HERE / f"{name}.npz")


def compile_tiny(graph: Graph, k: float = 3.0,
                 calib: dict[str, np.ndarray] | None = None,
                 preset: str = "spikingbrain", attention: bool = True) -> Artifact:
    """Compile under ``preset`` with threshold divisor ``k``; the lm_head stays float (the
    embedding is a gather, never spiked). ``attention=False`` leaves the SWA attention in
    float (spiked projections only: the preset as it was before it spiked attention)."""
    config = make_config(preset, {"k": str(k), "attention_quantize": str(int(attention))},
                         exclude=[lm_head(graph)])
    return compile_graph(graph, config, calib if calib is not None else data("calib"))
