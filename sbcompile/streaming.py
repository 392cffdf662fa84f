"""Layer-by-layer compilation of very large decoder stacks with bounded memory.

``compile_stream`` holds one layer at a time: it builds the layer's float IR graph, compiles it
(calibrate -> spike_quantize -> weight_quantize -> expand -> analyse, on the activations the
layers before it produced), writes the spiking layer to its own artifact, propagates the
activations through the float layer, and frees it. Peak memory is then one float layer plus the
passes' working copies, whatever the depth; time is linear in the number of layers.

``decoder_layer`` builds SpikingBrain-7B-shaped layers directly in the IR with random weights
made on the fly (never stored): even layers gated linear attention, odd layers sliding-window
GQA attention with RoPE, each with a SwiGLU MLP, pre-RMSNorms and residuals (FACTS.md 1).
"""
from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from sbcompile.artifact import Artifact
from sbcompile.config import CompileConfig
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.memory import mib, peak_rss_bytes, rss_bytes
from sbcompile.pipeline import compile_graph
from sbcompile.runtime.reference import run as run_graph

INPUT, OUTPUT = "hidden_in", "hidden_out"


@dataclass(frozen=True)
class StackShape:
    """Decoder dimensions; the defaults are SpikingBrain-7B's (Qwen2.5-7B's). GLA layers use
    the attention projections of the SWA layers (q: heads x head_dim, k/v: kv_heads x head_dim,
    kv heads shared GQA-style) and a low-rank forget gate hidden -> gate_rank -> kv width."""
    layers: int = 28
    hidden: int = 3584
    heads: int = 28
    kv_heads: int = 4
    head_dim: int = 128
    intermediate: int = 18944
    window: int = 4096
    gate_rank: int = 16
    rope_theta: float = 1e6
    eps: float = 1e-6

    def check(self) -> "StackShape":
        if self.layers < 1 or self.heads % self.kv_heads or self.head_dim % 2:
            raise SbcError(f"stack shape {asdict(self)}: needs layers >= 1, heads a multiple of "
                           "kv_heads and an even head_dim")
        return self


class _Builder:
    """Appends nodes to a graph (shapes from the op table's rules); every op returns its output
    value's name."""

    def __init__(self, name: str, batch: str, tokens: int, hidden: int):
        self.g = Graph(name, [INPUT], [], {}, [])
        self.g.add_value(INPUT, (batch, tokens, hidden), "float32")
        self.batch, self.tokens = batch, tokens

    def param(self, base: str, array: np.ndarray) -> str:
        return self.g.add_param(base, array)

    def op(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        return self.g.add_node(op, inputs, [name], f"{name}_node", **attrs)[0]

    def linear(self, x: str, weight: np.ndarray, name: str, bias: np.ndarray | None = None) -> str:
        ins = [x, self.param(f"{name}.weight", weight)]
        if bias is not None:
            ins.append(self.param(f"{name}.bias", bias))
        return self.op("linear", ins, name)

    def reshape(self, x: str, dims: tuple[int, ...], name: str) -> str:
        """Reshape keeping batch and tokens (ONNX 0 = copy the input dim)."""
        shape = self.param(f"{name}.shape", np.array((0, 0) + dims, dtype=np.int64))
        return self.op("reshape", [x, shape], name)

    def norm(self, x: str, scale: np.ndarray, eps: float, name: str) -> str:
        return self.op("rms_norm", [x, self.param(f"{name}.scale", scale)], name, axis=-1,
                       epsilon=eps)

    def binary(self, op: str, a: str, b: str, name: str) -> str:
        return self.op(op, [a, b], name)


def decoder_layer(shape: StackShape, index: int, tokens: int, seed: int = 0) -> Graph:
    """Float IR graph of layer ``index``: hidden_in [batch, tokens, hidden] -> hidden_out, with
    random weights (normal, std 1/sqrt(fan_in); norm scales near 1) from ``seed`` and
    ``index``."""
    shape.check()
    rng = np.random.default_rng([seed, index])
    b = _Builder(f"layer{index}", "batch", tokens, shape.hidden)

    def weight(n_out: int, n_in: int) -> np.ndarray:
        w = rng.standard_normal((n_out, n_in), dtype=np.float32)
        w *= np.float32(n_in ** -0.5)
        return w

    def scale(n: int) -> np.ndarray:
        return (1 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    h = shape.hidden
    x = b.norm(INPUT, scale(h), shape.eps, "input_norm")
    if index % 2 == 0:
        mix = _gla(b, shape, x, weight, scale)
    else:
        mix = _swa(b, shape, x, weight, rng)
    o_proj = b.linear(mix, weight(h, shape.heads * shape.head_dim), "o_proj")
    hid = b.binary("add", INPUT, o_proj, "attn_residual")
    y = b.norm(hid, scale(h), shape.eps, "post_norm")
    gate = b.op("silu", [b.linear(y, weight(shape.intermediate, h), "gate_proj")], "gate_act")
    up = b.linear(y, weight(shape.intermediate, h), "up_proj")
    act = b.binary("mul", gate, up, "mlp_act")
    b.g.outputs = [b.binary("add", hid, b.linear(act, weight(h, shape.intermediate), "down_proj"),
                            OUTPUT)]
    return b.g


def _heads(b: _Builder, x: str, heads: int, dim: int, name: str) -> str:
    return b.reshape(x, (heads, dim), name)


def _repeat_heads(b: _Builder, x: str, shape: StackShape, name: str) -> str:
    """[B, T, kv_heads, D] -> [B, T, heads, D], each kv head serving heads/kv_heads heads."""
    rep = shape.heads // shape.kv_heads
    split = b.reshape(x, (shape.kv_heads, 1, shape.head_dim), f"{name}.split")
    reps = b.param(f"{name}.reps", np.array((1, 1, 1, rep, 1), dtype=np.int64))
    wide = b.op("expand", [split, reps], f"{name}.expand")
    return b.reshape(wide, (shape.heads, shape.head_dim), name)


def _gla(b: _Builder, shape: StackShape, x: str, weight, scale) -> str:
    """ReLU q/k, GQA k/v, low-rank log-sigmoid gate / 16, GLA recurrence, per-head RMSNorm."""
    h, hd = shape.hidden, shape.head_dim
    kv_w = shape.kv_heads * hd
    q = b.op("relu", [b.linear(x, weight(shape.heads * hd, h), "q_proj")], "q_relu")
    k = b.op("relu", [b.linear(x, weight(kv_w, h), "k_proj")], "k_relu")
    v = b.linear(x, weight(kv_w, h), "v_proj")
    low = b.linear(x, weight(shape.gate_rank, h), "gk_proj.0")
    logit = b.linear(low, weight(kv_w, shape.gate_rank), "gk_proj.1",
                     bias=np.zeros(kv_w, dtype=np.float32))
    sig = b.op("sigmoid", [logit], "gate_sigmoid")
    logsig = b.op("log", [sig], "gate_logsigmoid")
    g = b.binary("div", logsig, b.param("gate_normalizer", np.float32(16.0)), "gate")
    heads = [_heads(b, q, shape.heads, hd, "q_heads")] + [
        _repeat_heads(b, _heads(b, t, shape.kv_heads, hd, f"{n}_kv"), shape, f"{n}_heads")
        for t, n in ((k, "k"), (v, "v"), (g, "g"))]
    o = b.op("gla", heads, "gla", scale=float(hd ** -0.5))
    o = b.norm(o, scale(hd), 1e-5, "gla_norm")
    return b.reshape(o, (shape.heads * hd,), "gla_merge")


def _rope_tables(shape: StackShape, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / shape.rope_theta ** (np.arange(0, shape.head_dim, 2) / shape.head_dim)
    freqs = np.arange(tokens)[:, None] * inv[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def _swa(b: _Builder, shape: StackShape, x: str, weight, rng) -> str:
    """Qwen attention (q/k/v with bias) with RoPE under a causal sliding window, native GQA."""
    h, hd = shape.hidden, shape.head_dim
    cos, sin = _rope_tables(shape, b.tokens)
    cos_p, sin_p = b.param("rope_cos", cos), b.param("rope_sin", sin)
    half = hd // 2
    idx = {k: b.param(f"rope.{k}", np.array([v], dtype=np.int64))
           for k, v in (("zero", 0), ("half", half), ("end", hd), ("axis", -1))}
    proj = {}
    for name, n_heads in (("q", shape.heads), ("k", shape.kv_heads), ("v", shape.kv_heads)):
        bias = (0.02 * rng.standard_normal(n_heads * hd, dtype=np.float32)).astype(np.float32)
        flat = b.linear(x, weight(n_heads * hd, h), f"{name}_proj", bias=bias)
        t = b.op("transpose", [_heads(b, flat, n_heads, hd, f"{name}_heads")], f"{name}_bhtd",
                 perm=[0, 2, 1, 3])
        if name != "v":
            t = _rope(b, t, cos_p, sin_p, idx, name)
        proj[name] = t
    att = b.op("attention", [proj["q"], proj["k"], proj["v"]], "attention",
               scale=float(hd ** -0.5), causal=1, window=shape.window)
    back = b.op("transpose", [att], "attn_bthd", perm=[0, 2, 1, 3])
    return b.reshape(back, (shape.heads * hd,), "attn_merge")


def _rope(b: _Builder, t: str, cos: str, sin: str, idx: dict, name: str) -> str:
    """t * cos + rotate_half(t) * sin, rotate_half(t) = concat(-t[..., D/2:], t[..., :D/2])."""
    hi = b.op("slice", [t, idx["half"], idx["end"], idx["axis"]], f"{name}_hi")
    lo = b.op("slice", [t, idx["zero"], idx["half"], idx["axis"]], f"{name}_lo")
    rot = b.op("concat", [b.op("neg", [hi], f"{name}_neg"), lo], f"{name}_rot", axis=-1)
    return b.binary("add", b.binary("mul", t, cos, f"{name}_cos"),
                    b.binary("mul", rot, sin, f"{name}_sin"), f"{name}_rope")


LayerBuilder = Callable[[], Graph]


def layer_path(out_dir: Path, index: int) -> Path:
    """Where layer ``index``'s spiking artifact is written."""
    return Path(out_dir) / f"layer{index:03d}.sbc"


def build_layer(index: int, build: LayerBuilder) -> Graph:
    """Build (or load) layer ``index``; SbcError unless it has one input and one output."""
    graph = build()
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise SbcError(f"layer {index} ('{graph.name}'): a streamed layer has one input and "
                       "one output")
    return graph


def forward_layer(graph: Graph, acts: np.ndarray) -> np.ndarray:
    """The float layer's output on ``acts``: the next layer's calibration input."""
    return run_graph(graph, {graph.inputs[0]: acts})[graph.outputs[0]]


def compile_layer(index: int, graph: Graph, acts: np.ndarray, config: CompileConfig,
                  out_dir: Path | None) -> dict:
    """Calibrate, spike, quantise and lower one float layer on its input activations, write it
    to ``layer_path(out_dir, index)`` when ``out_dir`` is given, and return its record
    (parameter and int8 weight bytes, compile seconds, the layer report's totals)."""
    start = time.perf_counter()
    art = compile_graph(graph, config, {graph.inputs[0]: acts})
    compiled = time.perf_counter()
    if out_dir is not None:
        Artifact(art.graph, art.config, art.report).save(layer_path(out_dir, index))
    return {"layer": index, "name": graph.name, "params": graph.param_count(),
            "float_bytes": int(sum(p.nbytes for p in graph.params.values())),
            "int8_weight_bytes": int(sum(p.nbytes for p in art.graph.params.values()
                                         if p.dtype == np.int8)),
            "spiking_bytes": int(sum(p.nbytes for p in art.graph.params.values())),
            "compile_s": compiled - start, "write_s": time.perf_counter() - compiled,
            "totals": art.report.get("totals", {})}


def with_memory(record: dict) -> dict:
    """``record`` with this process's current and peak resident memory (after a collection)."""
    gc.collect()
    record["rss_mb"], record["peak_rss_mb"] = mib(rss_bytes()), mib(peak_rss_bytes())
    return record


def compile_stream(layers: Iterable[LayerBuilder], calib: np.ndarray,
                   config: CompileConfig, out_dir: Path | None = None,
                   on_layer: Callable[[dict], None] | None = None) -> list[dict]:
    """Compile a stack one layer at a time, in this process. ``layers`` yields builders of float
    layer graphs (one input, one output of the same shape); ``calib`` [batch, T, hidden] feeds
    the first. Each spiking layer is saved as ``out_dir/layerNNN.sbc`` when ``out_dir`` is
    given. Returns (and passes to ``on_layer``) one record per layer (``compile_layer``'s, with
    build, forward and total seconds, CPU seconds and memory). ``sbcompile.distributed`` runs the same
    per-layer steps as tasks on a cluster."""
    acts = np.ascontiguousarray(calib, dtype=np.float32)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    records = []
    for index, build in enumerate(layers):
        start, cpu = time.perf_counter(), time.process_time()
        graph = build_layer(index, build)
        built = time.perf_counter()
        record = compile_layer(index, graph, acts, config, out_dir)
        forwarded = time.perf_counter()
        acts = forward_layer(graph, acts)
        record.update(build_s=built - start, forward_s=time.perf_counter() - forwarded,
                      seconds=time.perf_counter() - start, cpu_s=time.process_time() - cpu)
        del graph
        records.append(with_memory(record))
        if on_layer is not None:
            on_layer(record)
    return records


LAYER_SUFFIXES = (".onnx", ".nir")


def layer_models(folder: Path) -> list[Path]:
    """The layer models of a stack saved one file a layer (``.onnx`` or ``.nir``), in name order
    (so ``layer000.onnx``, ``layer001.onnx``, ... stream in depth order)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in LAYER_SUFFIXES and
                   p.is_file())
    if not files:
        raise SbcError(f"{folder}: a folder of layer models holds .onnx or .nir files, one a "
                       "layer; found none")
    return files
