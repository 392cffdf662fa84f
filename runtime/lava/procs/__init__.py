"""Lava Processes and ProcessModels of the sbcompile runtime.

Lava's model discovery imports every module beside a Process's module, so this package holds
only side-effect-free modules with absolute imports; the runner pins each process's model
explicitly, so discovery is never needed.
"""
