"""One rank of a tensor-parallel run for tests/test_tensor_parallel.py (started as a process):
joins a gloo group through a file store, runs the artifact's graph on the feeds and saves the
outputs, counts and accumulators it got.

    python tp_rank.py RANK WORLD STORE ARTIFACT FEEDS.npz OUT.npz [PLAN.json]
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

from sbcompile.artifact import Artifact
from sbcompile.runtime.tensor_parallel import TensorParallelRun


def main(rank: str, world: str, store: str, artifact: str, feeds: str, out: str,
         plan: str | None = None) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=int(rank),
                            world_size=int(world))
    try:
        graph = Artifact.load(artifact).graph
        tp = TensorParallelRun(graph, json.loads(Path(plan).read_text()) if plan else None)
        with np.load(feeds) as f:
            result = tp.run(dict(f), keep_integers=True)
        np.savez(out, **result)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
