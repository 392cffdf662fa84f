"""``python -m sbcompile``: the command line."""
from sbcompile.cli import main

main(prog_name="sbcompile")
