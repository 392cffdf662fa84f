"""Errors users can act on. The CLI prints them as one ``error: ...`` line and exits 2."""


class SbcError(Exception):
    """Bad input or an unsupported model: a user-facing error (exit code 2)."""


class UnsupportedError(SbcError):
    """The model uses something sbcompile does not support (names the node)."""


class GraphError(SbcError):
    """The IR graph is malformed: dangling values, cycles, shape or dtype mismatches."""


class ArtifactError(SbcError):
    """An artifact cannot be read: missing member, checksum mismatch, wrong format version."""


class DynamicDimError(UnsupportedError):
    """A lowering that needs a dim static (a recurrent unrolling over the sequence length) met
    a symbolic one: data of the model's input shapes (calibration data) can pin it. ``dims``
    names the symbolic dims in the way."""

    def __init__(self, message: str, dims: tuple[str, ...] = ()):
        super().__init__(message)
        self.dims = tuple(dims)
