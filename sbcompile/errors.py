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


def first_few(items: list[str], shown: int = 3, sep: str = "; ") -> str:
    """The first ``shown`` of ``items`` and how many more: an error about many nodes stays one
    short line."""
    more = len(items) - shown
    return sep.join(items[:shown]) + (f" (and {more} more)" if more > 0 else "")
