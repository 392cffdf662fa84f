"""Errors users can act on. The CLI prints them as one ``error: ...`` line and exits 2."""


class SbcError(Exception):
    """Bad input or an unsupported model: a user-facing error (exit code 2)."""


class UnsupportedError(SbcError):
    """The model uses something sbcompile does not support (names the node)."""


class GraphError(SbcError):
    """The IR graph is malformed: dangling values, cycles, shape or dtype mismatches."""


class ArtifactError(SbcError):
    """An artifact cannot be read: missing member, checksum mismatch, wrong format version."""
