"""The Triton target whatever mode this process's Triton is in.

Triton fixes its mode at its first import, and torch's ONNX exporter imports it (GPU mode) as a
side effect, so a process that exported a PyTorch module used to refuse ``interpret=True`` (the
CLI tests failed when the compile tests ran first). Such a run now happens in a child process that
chooses the mode. Each case starts a fresh interpreter, so that what this test process imported
does not decide the outcome; counts and accumulators equal the reference bit for bit."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference

sys.path.insert(0, str(Path(__file__).parent))
from models import build_mlp  # noqa: E402

SCRIPT = """
import sys, numpy as np, sbcompile
from sbcompile.errors import SbcError
import triton.language  # this process's Triton mode is fixed here, by TRITON_INTERPRET
from sbcompile.runtime.triton.loader import triton_interprets
assert triton_interprets() == (sys.argv[4] == "1"), triton_interprets()
model = sbcompile.load(sys.argv[1])
try:
    r = model.run(dict(np.load(sys.argv[2])), "triton", interpret=sys.argv[5] == "1")
except SbcError as e:
    print("SbcError:", e)
    sys.exit(2)
np.savez(sys.argv[3], **r.counts, **r.outputs)
"""


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    zoo = build_mlp()
    art = compile_model(zoo.onnx_bytes(), "spikingbrain", calib=zoo.inputs,
                        overrides={"targets": "triton"})
    tmp = tmp_path_factory.mktemp("triton_mode")
    art.save(tmp / "m.sbc")
    np.savez(tmp / "x.npz", **zoo.eval_inputs)
    return art, zoo, tmp


def _run(tmp: Path, imported_interpreted: bool, interpret: bool):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if imported_interpreted:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-c", SCRIPT, tmp / "m.sbc", tmp / "x.npz",
                           tmp / "out.npz", str(int(imported_interpreted)), str(int(interpret))],
                          env=env, capture_output=True, text=True, timeout=600)


def test_interpreted_run_in_a_process_whose_triton_is_in_gpu_mode(mlp):
    art, zoo, tmp = mlp
    proc = _run(tmp, imported_interpreted=False, interpret=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = dict(np.load(tmp / "out.npz"))
    ref = reference.run(art.graph, zoo.eval_inputs)
    keep = [n.outputs[0] for n in art.graph.nodes if n.op in ("spike_encode", "spike_linear")]
    want = reference.evaluate(art.graph, zoo.eval_inputs, keep=keep)
    for name in keep:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_allclose(got["logits"], ref["logits"], rtol=1e-5, atol=1e-5)


def test_gpu_run_in_an_interpreting_process_goes_to_a_child(mlp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the child would run it")
    _, _, tmp = mlp
    proc = _run(tmp, imported_interpreted=True, interpret=False)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the child's own refusal, passed on as one SbcError (not the in-process mode error)
    assert "needs a CUDA GPU" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
