"""Triton kernels and the executor of Triton kernel plans."""
