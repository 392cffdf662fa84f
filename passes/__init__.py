"""Passes of the sbcompile pipeline."""
