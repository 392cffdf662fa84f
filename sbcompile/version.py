"""The package version, in a module of its own: what an artifact or export records reads it
here without importing the package root (whose lazy API pulls in every stage)."""
__version__ = "0.1.0"
