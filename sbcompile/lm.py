"""Language models on any target: greedy generation and next-token metrics.

A compiled LM is a graph ``input_ids [batch, T] (int64) -> logits [batch, T, V]`` for a fixed
context T, causal in its tokens (causal attention, recurrent GLA, per-token norms and
thresholds). Generation feeds the last T tokens, right-padded, and reads the logits at the last
real position, so the pad never influences the token chosen. ``run(graph, feeds) -> {output:
array}`` is the target: ``sbcompile.runtime.reference.run`` or any runtime of that signature.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph

RunFn = Callable[[Graph, dict[str, np.ndarray]], dict[str, np.ndarray]]


def lm_signature(graph: Graph) -> tuple[str, str, int]:
    """(input name, logits name, context T) of an LM graph; SbcError if it is not one."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise SbcError(f"graph '{graph.name}': a language model has one input (token ids) and "
                       f"one output (logits), not {len(graph.inputs)} and {len(graph.outputs)}")
    ids, logits = graph.values[graph.inputs[0]], graph.values[graph.outputs[0]]
    if ids.dtype != "int64" or len(ids.shape) != 2 or not isinstance(ids.shape[1], int):
        raise SbcError(f"input '{ids.name}' must be int64 token ids [batch, T] with a fixed T, "
                       f"got {ids.dtype} {list(ids.shape)}")
    if len(logits.shape) != 3 or not isinstance(logits.shape[2], int):
        raise SbcError(f"output '{logits.name}' must be logits [batch, T, vocab], got "
                       f"{list(logits.shape)}")
    return ids.name, logits.name, ids.shape[1]


def lm_head(graph: Graph) -> str:
    """The name of the node producing the logits (to keep in float with ``exclude``)."""
    _, logits, _ = lm_signature(graph)
    node = graph.producers().get(logits)
    if node is None or node.op not in ("linear", "matmul"):
        raise SbcError(f"output '{logits}' is not produced by a linear layer (lm_head)")
    return node.name


def generate(run: RunFn, graph: Graph, prompt: Sequence[int], n_tokens: int,
             pad: int = 0) -> list[int]:
    """``n_tokens`` greedy tokens after ``prompt`` (the first maximum wins ties)."""
    input_name, logits_name, context = lm_signature(graph)
    vocab = graph.values[logits_name].shape[2]
    tokens = [int(t) for t in prompt]
    if not tokens:
        raise SbcError("the prompt is empty")
    if not all(0 <= t < vocab for t in tokens) or not 0 <= pad < vocab:
        raise SbcError(f"prompt and pad tokens must lie in [0, {vocab})")
    out = []
    for _ in range(n_tokens):
        window = tokens[-context:]
        ids = np.full((1, context), pad, dtype=np.int64)
        ids[0, :len(window)] = window
        logits = run(graph, {input_name: ids})[logits_name]
        nxt = int(np.argmax(logits[0, len(window) - 1]))
        tokens.append(nxt)
        out.append(nxt)
    return out


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean next-token loss in nats (float64 log-softmax)."""
    z = logits.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-np.take_along_axis(logp, labels[..., None], -1).mean())


def next_token_metrics(logits: np.ndarray, reference: np.ndarray,
                       labels: np.ndarray) -> dict[str, float]:
    """Loss and accuracy of ``logits`` on ``labels``, and the share of positions whose greedy
    token equals that of ``reference`` (e.g. spiking vs float)."""
    pred = logits.argmax(-1)
    return {"loss": cross_entropy(logits, labels), "accuracy": float(np.mean(pred == labels)),
            "agreement": float(np.mean(pred == reference.argmax(-1)))}
