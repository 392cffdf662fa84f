"""Backends of the sbcompile pipeline."""
