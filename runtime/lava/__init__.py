"""Lava (lava-nc) processes, process models and the supervised runner."""
