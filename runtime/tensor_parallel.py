"""Tensor-parallel execution of a spiking graph over ``torch.distributed`` (docs/DISTRIBUTED.md).

Every rank holds a shard of each spiked linear's int8 weight, split as Megatron splits
projections: by output channel (*column*: q, k, v, gate, up) or by input channel (*row*: o,
down). Float ops run on every rank (replicated). Each ``spike_encode`` runs once, on rank 0, and
its counts travel in one broadcast as the encoder's signed base-128 int8 digit planes (one byte
a count when the encoder's limit is at most 127, as calibrated count bounds make it; the digit
planes are also what the int8 GEMM reads), with the thresholds and the peak count in the same
buffer. A column shard's accumulators and decoded outputs are its own output channels, gathered;
a row shard's partial accumulators, laid out in the layer's [groups, outputs] form, are summed
exactly in int32 (``all_reduce``) before the decode every rank runs on the whole. So counts and
accumulators equal the single-process reference's bit for bit (``tests/test_tensor_parallel.py``).

Integer products run on the reference's exact integer path (CPU, gloo) or on the Triton int8
GEMM (``backend='triton'``: GPUs with NCCL, or the interpreter).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.ops import count_limit, node_attrs, threshold_shape
from sbcompile.runtime import reference
from sbcompile.runtime import reference_spike as ref
from sbcompile.runtime.triton.digits import digits_for, split_digit

# Megatron's pairing in the names of SpikingBrain / Qwen / Llama layers: the projections whose
# input is a head-local or MLP-local activation split by input channel, the others by output.
MEGATRON_PLAN = {"*o_proj*": "row", "*down_proj*": "row", "*": "column"}
SPLITS = ("column", "row")


def split_of(node_name: str, plan: dict[str, str]) -> str:
    """The first plan pattern matching ``node_name`` decides (fnmatch); column if none does."""
    for pattern, split in plan.items():
        if fnmatch.fnmatchcase(node_name, pattern):
            if split not in SPLITS:
                raise SbcError(f"tensor-parallel plan '{pattern}': split '{split}' is not one "
                               f"of {', '.join(SPLITS)}")
            return split
    return "column"


def shard_bounds(n: int, unit: int, world: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) slices of ``n`` for each rank, cut at multiples of ``unit`` (a weight
    group, so each rank's groups are whole), as even as that allows."""
    units = -(-n // unit)
    cuts = [min(n, (units * r // world) * unit) for r in range(world + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


@dataclass
class Shard:
    """One rank's part of a spiked linear: ``weight`` int8 [N_r, K] (column) or [N, K_r] (row),
    its channel range [lo, hi), the layer's group size and number of groups."""
    split: str
    lo: int
    hi: int
    weight: np.ndarray
    group: int
    groups: int


def make_shard(weight: np.ndarray, group_size: int | None, split: str, rank: int,
               world: int) -> Shard:
    n_out, k = weight.shape
    group = group_size if group_size and group_size < k else k
    if split == "column":
        lo, hi = shard_bounds(n_out, 1, world)[rank]
        part = weight[lo:hi]
    else:
        lo, hi = shard_bounds(k, group if group < k else (32 if k % 32 == 0 else 1),
                              world)[rank]
        part = weight[:, lo:hi]
    return Shard(split, lo, hi, np.ascontiguousarray(part), group, k // group)


# ---- counts on the wire ------------------------------------------------------------------------
def digit_planes(counts: torch.Tensor, n: int) -> torch.Tensor:
    """int32 counts as ``n`` signed base-128 int8 digits (low first, the Triton encoder's
    planes): counts == sum_p planes[p] * 128**p."""
    planes, rest = [], counts.to(torch.int32)
    for p in range(n):
        digit = rest
        if p < n - 1:
            digit, rest = split_digit(rest)
        planes.append(digit.to(torch.int8))
    return torch.stack(planes)


def from_planes(planes: torch.Tensor) -> torch.Tensor:
    total = torch.zeros(planes.shape[1:], dtype=torch.int32, device=planes.device)
    for p in range(planes.shape[0] - 1, -1, -1):
        total = total * 128 + planes[p].to(torch.int32)
    return total


def broadcast_counts(counts: torch.Tensor | None, vth: torch.Tensor | None, shape: tuple,
                     vth_shape: tuple, limit: int, device: torch.device):
    """Rank 0's counts (int32 ``shape``) and thresholds (float32 ``vth_shape``) on every rank,
    in one broadcast of one int8 buffer: [peak int32][vth float32][digit planes]. Returns
    (counts int32, digit planes int8 [n, ...], vth, peak int32 [1])."""
    n = digits_for(limit)
    n_vth = int(np.prod(vth_shape))
    n_counts = int(np.prod(shape))
    size = 4 + 4 * n_vth + n * n_counts
    if dist.get_rank() == 0:
        peak = counts.abs().amax().reshape(1).to(torch.int32) if n_counts else \
            torch.zeros(1, dtype=torch.int32, device=device)
        buf = torch.cat([peak.view(torch.int8), vth.reshape(-1).to(torch.float32).view(torch.int8),
                         digit_planes(counts, n).reshape(-1)])
    else:
        buf = torch.empty(size, dtype=torch.int8, device=device)
    dist.broadcast(buf, src=0)
    peak = buf[:4].view(torch.int32)
    vth_out = buf[4:4 + 4 * n_vth].view(torch.float32).reshape(vth_shape)
    planes = buf[4 + 4 * n_vth:].reshape((n,) + tuple(shape))
    return (counts if dist.get_rank() == 0 else from_planes(planes)), planes, vth_out, peak


def gather_last(local: torch.Tensor, bounds: list[tuple[int, int]]) -> torch.Tensor:
    """Every rank's slice of the last axis, concatenated in rank order."""
    width = max(hi - lo for lo, hi in bounds)
    pad = torch.zeros(local.shape[:-1] + (width,), dtype=local.dtype, device=local.device)
    pad[..., :local.shape[-1]] = local
    parts = [torch.empty_like(pad) for _ in bounds]
    dist.all_gather(parts, pad.contiguous())
    return torch.cat([p[..., :hi - lo] for p, (lo, hi) in zip(parts, bounds)], dim=-1)


# ---- integer products ----------------------------------------------------------------------------
def shard_acc_reference(counts: np.ndarray, shard: Shard) -> np.ndarray:
    """The shard's accumulators on the reference's exact integer path: column -> [..., G, N_r];
    row -> [..., G, N] with zeros outside the shard's groups (a partial sum where the shard
    cuts a group, as it does when the layer has one group)."""
    a = {"group_size": shard.group}
    if shard.split == "column":
        return ref.spike_linear(a, counts, shard.weight)
    n_out = shard.weight.shape[0]
    full = np.zeros(counts.shape[:-1] + (shard.groups, n_out), dtype=np.int32)
    if shard.hi > shard.lo:
        part = ref.spike_linear({"group_size": min(shard.group, shard.hi - shard.lo)},
                                counts[..., shard.lo:shard.hi], shard.weight)
        g0 = shard.lo // shard.group
        full[..., g0:g0 + part.shape[-2], :] += part
    return full


class TensorParallelRun:
    """Runs a spiking graph on this rank of the default process group, every rank calling
    ``run`` with the same feeds. ``plan``: fnmatch pattern of a spiked linear's node name ->
    'column' | 'row' (MEGATRON_PLAN by default)."""

    def __init__(self, graph: Graph, plan: dict[str, str] | None = None):
        if not dist.is_initialized():
            raise SbcError("tensor-parallel run: torch.distributed is not initialised")
        self.g = graph
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device("cpu")
        plan = MEGATRON_PLAN if plan is None else plan
        self.shards: dict[str, Shard] = {}
        dropped = set()
        for node in graph.nodes:
            if node.op == "spike_linear":
                weight = graph.params[node.inputs[1]]
                self.shards[node.name] = make_shard(
                    weight, node_attrs(node)["group_size"], split_of(node.name, plan),
                    self.rank, self.world)
                dropped.add(node.inputs[1])
        self.params = {k: v for k, v in graph.params.items() if k not in dropped}
        self.column_acc = {}  # acc value -> its column shard (decoded shard-locally)

    def run(self, feeds: dict[str, np.ndarray], keep_integers: bool = False
            ) -> dict[str, np.ndarray]:
        """The graph outputs (and with ``keep_integers`` every spike_encode's counts and
        spike_linear's accumulators, whole), the same on every rank."""
        env: dict[str, np.ndarray] = dict(self.params)
        env.update(reference.check_feeds(self.g, feeds))
        kept = {}
        for node in self.g.nodes:
            a = node_attrs(node)
            if node.op == "spike_encode":
                outs = self._encode(node, a, env)
            elif node.op == "spike_linear":
                outs = (self._linear(node, env),)
            elif node.op == "spike_decode" and node.inputs[0] in self.column_acc:
                outs = (self._column_decode(node, a, env),)
            else:
                try:
                    outs = reference.KERNELS[node.op](a, *[env[i] if i else None
                                                           for i in node.inputs])
                except OverflowError as e:
                    raise reference.range_error(node, e) from None
                outs = outs if isinstance(outs, tuple) else (outs,)
            for name, value in zip(node.outputs, outs):
                env[name] = value
            if keep_integers and node.op in ("spike_encode", "spike_linear"):
                kept[node.outputs[0]] = self._whole(node.outputs[0], env)
        return {**{name: env[name] for name in self.g.outputs}, **kept}

    def _encode(self, node, a, env):
        x = env[node.inputs[0]]
        threshold = env[node.inputs[1]] if len(node.inputs) > 1 and node.inputs[1] else None
        counts = vth = None
        if self.rank == 0:
            try:
                counts, vth = ref.spike_encode(a, x, threshold)
            except OverflowError as e:
                raise reference.range_error(node, e) from None
            counts, vth = torch.from_numpy(counts), torch.from_numpy(np.asarray(vth))
        vth_shape = threshold_shape(x.shape, a["granularity"]) if a["policy"] == "dynamic" \
            else np.shape(threshold)
        counts, _, vth, _ = broadcast_counts(counts, vth, x.shape, vth_shape, count_limit(a),
                                             self.device)
        return counts.numpy(), vth.numpy().copy()

    def _linear(self, node, env):
        shard = self.shards[node.name]
        acc = shard_acc_reference(env[node.inputs[0]], shard)
        if shard.split == "column":
            self.column_acc[node.outputs[0]] = shard
            return acc
        total = torch.from_numpy(np.ascontiguousarray(acc))
        dist.all_reduce(total, op=dist.ReduceOp.SUM)  # exact: int32 partial sums
        return total.numpy()

    def _column_decode(self, node, a, env):
        """The shard's output channels decoded (scale and bias sliced), then gathered."""
        shard = self.column_acc[node.inputs[0]]
        scale = env[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] else None
        bias = env[node.inputs[3]] if len(node.inputs) > 3 and node.inputs[3] else None
        y = ref.spike_decode(a, env[node.inputs[0]], env[node.inputs[1]],
                             None if scale is None else scale[..., shard.lo:shard.hi],
                             None if bias is None else bias[..., shard.lo:shard.hi])
        return self._gathered(y, node.outputs[0])

    def _whole(self, name: str, env) -> np.ndarray:
        """A value whole on every rank: a column shard's accumulators gathered."""
        shard = self.column_acc.get(name)
        if shard is None:
            return env[name]
        return self._gathered(env[name], name)

    def _gathered(self, local: np.ndarray, name: str) -> np.ndarray:
        """Every rank's output channels of value ``name`` (its local slice ``local``), whole."""
        n_out = int(self.g.values[name].shape[-1])
        return gather_last(torch.from_numpy(np.ascontiguousarray(local)),
                           shard_bounds(n_out, 1, self.world)).numpy()


# ---- the same shards on the Triton int8 GEMM (GPUs, or the interpreter) -------------------------
def wire_encoding(counts: torch.Tensor, planes: torch.Tensor, vth: torch.Tensor,
                  peak: torch.Tensor, lo: int = 0, hi: int | None = None):
    """The broadcast counts as the launcher's ``Encoded`` (digit planes for the int8 GEMM), for
    the input channels [lo, hi) a row shard reads (all by default)."""
    from sbcompile.runtime.triton import launch

    k = counts.shape[-1]
    hi = k if hi is None else hi
    rows = counts.numel() // k
    vth_rows = torch.broadcast_to(vth, counts.shape[:-1] + (1,)).reshape(rows).contiguous()
    part = planes.reshape(planes.shape[0], rows, k)[..., lo:hi].contiguous()
    return launch.Encoded(counts.reshape(rows, k)[:, lo:hi], vth, vth_rows,
                          digits=(part, peak, planes.shape[0]))


def column_linear_triton(kern, enc, shard: Shard, weight: torch.Tensor, scale: torch.Tensor,
                         bias: torch.Tensor | None, n_out: int, world: int, keep_acc: bool = False):
    """A column shard on the int8 GEMM, decoded in the kernel with its slice of the scales and
    bias, gathered over the ranks: (acc [rows, G, N] int32 or None, y [rows, N])."""
    from sbcompile.runtime.triton import launch

    acc, y = launch.gemm_linear(kern, enc, weight, shard.group if shard.groups > 1 else None,
                                scale[..., shard.lo:shard.hi].contiguous(),
                                None if bias is None else bias[shard.lo:shard.hi].contiguous(),
                                store_acc=keep_acc, decode=True)
    bounds = shard_bounds(n_out, 1, world)
    return (gather_last(acc, bounds) if keep_acc else None), gather_last(y, bounds)


def row_linear_triton(kern, enc, shard: Shard, weight: torch.Tensor, scale: torch.Tensor,
                      bias: torch.Tensor | None):
    """A row shard on the int8 GEMM: its groups' accumulators in the layer's [rows, G, N]
    layout, summed exactly in int32 over the ranks, then decoded like ``spike_decode`` (groups
    summed by one torch reduction, not in the reference's order: float parts agree within
    rounding, as on the Triton target): (acc, y)."""
    from sbcompile.runtime.triton import launch

    n_out = weight.shape[0]
    rows = enc.rows
    total = torch.zeros((rows, shard.groups, n_out), dtype=torch.int32, device=weight.device)
    if shard.hi > shard.lo:
        part, _ = launch.gemm_linear(kern, enc, weight, min(shard.group, shard.hi - shard.lo)
                                     if shard.groups > 1 else None, None, None, store_acc=True,
                                     decode=False)
        g0 = shard.lo // shard.group
        total[:, g0:g0 + part.shape[1]] += part
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    y = (total.to(torch.float32) * scale).sum(dim=1) * enc.vth_rows[:, None]
    return total, (y if bias is None else y + bias)
