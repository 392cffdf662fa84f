"""Recurrent layers from torch (LSTM, GRU, and an LSTMCell loop that the exporter unrolls) through
the whole path: the ONNX float graph matches onnxruntime within 1e-5 relative; under
`spikingbrain` the input and every recurrent projection are spiked linear layers (the gates stay
float); Lava and the Triton interpreter reproduce the reference's counts and accumulators bit for
bit. The Triton part runs in a child process with TRITON_INTERPRET=1 (see test_triton_runtime)."""
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.pipeline import compile_model
from sbcompile.runtime.reference import run

sys.path.insert(0, str(Path(__file__).parent))
from exactness import (assert_lava_matches_reference, assert_triton_matches_reference,  # noqa: E402
                        run_interpreter_child)

CHILD = os.environ.get("TRITON_INTERPRET") == "1"
STEPS, BATCH, FEATURES, HIDDEN = 4, 2, 12, 16


class Recurrent(torch.nn.Module):
    """A sequence classifier: a recurrent layer, then a linear head on the last step."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "LSTMCell":
            self.rnn = torch.nn.LSTMCell(FEATURES, HIDDEN)
        else:
            self.rnn = getattr(torch.nn, kind)(FEATURES, HIDDEN, batch_first=True,
                                               bidirectional=kind == "GRU")
        self.head = torch.nn.Linear(HIDDEN * (2 if kind == "GRU" else 1), 5)

    def forward(self, x):
        if self.kind == "LSTMCell":  # unrolled by the exporter into Gemm / Sigmoid / Tanh
            h = c = torch.zeros(x.shape[0], HIDDEN)
            for t in range(x.shape[1]):
                h, c = self.rnn(x[:, t], (h, c))
            return self.head(h)
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


def _onnx(kind: str, seed: int = 0) -> tuple[bytes, dict]:
    torch.manual_seed(seed)
    module = Recurrent(kind).eval()
    x = torch.randn(BATCH, STEPS, FEATURES)
    program = torch.onnx.export(module, (x,), dynamo=True, input_names=["x"],
                                output_names=["y"], verbose=False)
    return program.model_proto.SerializeToString(), {"x": x.numpy()}


@pytest.fixture(scope="module", params=["LSTM", "GRU", "LSTMCell"])
def compiled(request):
    model, feeds = _onnx(request.param)
    return request.param, model, feeds, compile_model(model, "spikingbrain", calib=feeds)


@pytest.mark.skipif(CHILD, reason="parent only")
def test_float_graph_matches_onnxruntime(compiled):
    kind, model, feeds, _ = compiled
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = run(load_onnx(model), feeds)["y"]
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want)), kind


@pytest.mark.skipif(CHILD, reason="parent only")
def test_every_projection_is_spiked(compiled):
    """Input projection, one recurrent projection per step after the first, and the head."""
    kind, _, _, art = compiled
    spiked = [layer["name"] for layer in art.report["layers"]]
    per_direction = {"LSTM": STEPS, "GRU": 2 * STEPS - 1, "LSTMCell": 2 * STEPS - 1}[kind]
    directions = 2 if kind == "GRU" else 1
    assert len(spiked) == per_direction * directions + 1, spiked
    ops = {n.op for n in art.graph.nodes}
    assert "linear" not in ops and "matmul" not in ops  # every projection became integer
    assert {"sigmoid", "tanh"} <= ops  # the gates stay float
    assert art.report["outputs_fidelity"]["y"]["cosine"] > 0.98


@pytest.mark.skipif(CHILD, reason="parent only")
def test_lava_equals_reference_bit_for_bit(compiled):
    kind, _, feeds, art = compiled
    assert_lava_matches_reference(art.graph, feeds, "y", label=f"{kind}: ")


@pytest.mark.skipif(CHILD, reason="this is the child")
def test_triton_interpreter_in_a_child():
    run_interpreter_child(__file__, "triton_equals", passed=3)


@pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process")
def test_triton_equals_reference_bit_for_bit(compiled):
    kind, _, feeds, art = compiled
    assert_triton_matches_reference(art.graph, feeds, "y", label=f"{kind}: ")


@pytest.mark.skipif(CHILD, reason="parent only")
def test_recurrent_steps_share_one_quantised_weight(compiled):
    kind, _, _, art = compiled
    quantised = [n.inputs[1] for n in art.graph.nodes if n.op == "spike_linear"]
    # W and R (GRU: W, R_zr, R_h per direction), the head; the unrolled cell: W_ih, W_hh, head
    distinct = {"LSTM": 3, "GRU": 7, "LSTMCell": 3}[kind]
    assert len(set(quantised)) == distinct, sorted(set(quantised))
