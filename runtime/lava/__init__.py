"""Lava (lava-nc 0.10.0) runtime: processes and models, the network builder, the supervised
runner and the Loihi 2 mapper.

Importing this package installs the import hook that lets the unmodified lava-nc wheel load on
Python 3.11 (``shim``); it acts only when Lava is first imported.
"""
from sbcompile.runtime.lava import shim

shim.install()
