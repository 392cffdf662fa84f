"""sbcompile: a spike compiler for SpikingBrain-style spiking inference.

``sbcompile.compile(model, ...) -> CompiledModel`` compiles an ONNX model, NIR file, IR graph or
PyTorch module; ``sbcompile.load(path)`` reads a saved one; ``CompiledModel.run(inputs,
target=...)`` returns a ``RunResult`` (outputs, counts, timings) on every target (see ``api``).
"""
from sbcompile.version import __version__

_API = ("compile", "load", "CompiledModel", "RunResult")


def __getattr__(name: str):
    """The Python API, imported on first use so that `import sbcompile` stays light."""
    if name in _API:
        from sbcompile import api

        return getattr(api, name)
    raise AttributeError(f"module 'sbcompile' has no attribute '{name}'")


__all__ = [*_API, "__version__"]
