"""Runtimes that execute compiled programs: the numpy reference interpreter, Lava and Triton."""
