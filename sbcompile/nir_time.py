"""The time convention under which sbcompile reads and writes NIR graphs (the NIR frontend and
the NIR exporter share it): one simulation step of ``STEP`` seconds, the dt that snnTorch's NIR
import assumes; exported LIF neurons have tau = STEP, so one Euler step from rest leaves the
membrane at the step's input."""

STEP = 1e-4  # seconds
