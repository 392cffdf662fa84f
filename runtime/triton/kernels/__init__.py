"""Triton kernels of the spiking ops. Everything here is ``@triton.jit`` code: the loader
(``sbcompile.runtime.triton.loader``) imports this package once compiled for the GPU and, when
asked, once more as an interpreted copy for CPU runs."""
from . import attention_scores, dense_gemv, encode, event_gemv, int8_gemm  # noqa: F401
