"""sbcompile: a spike compiler for SpikingBrain-style spiking inference.

``sbcompile.compile(module, example_inputs, preset=..., calib=...)`` compiles a PyTorch module and
``sbcompile.compile_model(path_or_graph, ...)`` an ONNX model or IR graph (see ``pipeline``).
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    """The Python API, imported on first use so that `import sbcompile` stays light."""
    if name in ("compile", "compile_model"):
        from sbcompile import pipeline

        return getattr(pipeline, name)
    if name == "Artifact":
        from sbcompile.artifact import Artifact

        return Artifact
    raise AttributeError(f"module 'sbcompile' has no attribute '{name}'")
