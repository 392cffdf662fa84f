"""sbcompile: a spike compiler for SpikingBrain-style spiking inference."""
__version__ = "0.1.0"
