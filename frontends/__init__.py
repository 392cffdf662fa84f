"""Frontends of the sbcompile pipeline."""
