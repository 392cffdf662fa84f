"""A few launches of each decode kernel on 3584->18944, M=1, for Nsight Compute:

    ncu --clock-control none -k regex:'dense_gemv|int8_gemm|w8a16|event_gemv' \
        python benchmarks/triton_ncu.py
"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triton_baselines import w8a16_linear  # noqa: E402
from triton_decode import ours  # noqa: E402
from triton_linear import Layer, activations  # noqa: E402

from sbcompile.runtime.triton.loader import kernels  # noqa: E402

kern = kernels(interpret=False)
rng = np.random.default_rng(0)
layer = Layer(3584, 18944, 1, rng)
x = torch.from_numpy(activations("gaussian", (1, 3584), rng)).cuda()
for _ in range(2):
    ours(kern, x, layer, 0, "dense")
    ours(kern, x, layer, 0, "gemm_split")
    ours(kern, x, layer, 0, "event")
    w8a16_linear(x.to(torch.bfloat16), layer.w[0], layer.chan_scale, (32, 128, 1))
torch.cuda.synchronize()
