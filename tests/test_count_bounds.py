"""Count bounds from measurement: with calibration data the default `spikingbrain` preset (no
clamp of its own) gets per-encoder bounds of 2x the largest count seen, so a conv on a real-size
image runs bit-exact on Lava and exports to QDQ, where the worst case (k x 3*128*128 + 1) refused
both. Inputs beyond the bounds saturate and are counted; refusals name the --set key and value."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sbcompile.backends.export_onnx_qdq import to_onnx
from sbcompile.cli import main
from sbcompile.errors import SbcError
from sbcompile.passes.count_bounds import saturations
from sbcompile.pipeline import compile_model
from sbcompile.runtime import reference

SHAPE = (1, 3, 128, 128)  # 49152 elements per sample: the worst-case count is 147457


def _image_net(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, stride=4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 4, stride=4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5)).eval()
    path = tmp_path / "image_net.onnx"
    torch.onnx.export(net, (torch.zeros(SHAPE),), str(path), input_names=["x"],
                      output_names=["y"], dynamo=True)
    return path


def _images(n, seed):
    rng = np.random.default_rng(seed)
    smooth = rng.standard_normal((n, 3, 16, 16)).repeat(8, axis=2).repeat(8, axis=3)
    return {"x": (smooth + 0.3 * rng.standard_normal((n, *SHAPE[1:]))).astype(np.float32)}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = _image_net(tmp_path_factory.mktemp("bounds"))
    return path, compile_model(path, "spikingbrain", calib=_images(4, 1))


def test_worst_case_bound_is_refused_with_the_key_and_value(compiled):
    path, _ = compiled
    art = compile_model(path, "spikingbrain", calib=_images(4, 1),
                        overrides={"count_bound": "worst_case"})
    assert not art.report["targets"]["lava"]["lowered"]
    reason = art.report["targets"]["lava"]["reason"]
    assert "24-bit" in reason and "--set max_count=" in reason
    fits = int(reason.split("--set max_count=")[1].split()[0])
    art_fixed = compile_model(path, "spikingbrain", calib=_images(4, 1),
                              overrides={"count_bound": "worst_case", "max_count": str(fits)})
    assert art_fixed.report["targets"]["lava"]["lowered"]
    with pytest.raises(SbcError, match=r"--set max_count=\d+ fits"):
        to_onnx(art.graph)


def test_measured_bounds_run_exactly_on_lava_and_qdq(compiled):
    from sbcompile.runtime.targets import run_artifact

    _, art = compiled
    bounds = art.report["count_bounds"]
    assert bounds and all(b["bound"] == max(1, 2 * b["max_seen"]) for b in bounds.values())
    assert max(b["bound"] for b in bounds.values()) < 1000
    assert art.report["targets"]["lava"]["lowered"], art.report["targets"]["lava"]
    feeds = _images(1, 7)
    keep = [v for info in art.graph.meta["layers"].values() for v in (info["counts"],
                                                                      info["acc"])]
    want = reference.evaluate(art.graph, feeds, keep=keep)
    got = run_artifact(art, "lava", feeds, timeout=300).counts
    import onnxruntime as ort

    session = ort.InferenceSession(to_onnx(art.graph, keep).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    qdq = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    for name in keep:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"lava {name}")
        np.testing.assert_array_equal(qdq[name], want[name], err_msg=f"qdq {name}")


def test_inputs_beyond_the_bounds_saturate_and_are_counted(compiled, tmp_path):
    _, art = compiled
    calm = saturations(art.graph, _images(1, 3))
    assert set(calm) == set(art.report["count_bounds"])
    spiky = _images(1, 3)
    spiky["x"][:, :, 60, 60] = 1e4  # one hot pixel takes a token's whole mass
    hot = saturations(art.graph, spiky)
    assert sum(s["saturated"] for s in hot.values()) > sum(s["saturated"] for s in calm.values())
    counts = reference.evaluate(art.graph, spiky, keep=[n.outputs[0] for n in art.graph.nodes
                                                        if n.op == "spike_encode"])
    for n in art.graph.nodes:
        if n.op == "spike_encode":
            assert np.abs(counts[n.outputs[0]]).max() <= n.attrs["max_count"]
    art.save(tmp_path / "m.sbc")
    np.savez(tmp_path / "x.npz", **spiky)
    r = CliRunner().invoke(main, ["run", str(tmp_path / "m.sbc"), "--input",
                                  str(tmp_path / "x.npz")])
    assert r.exit_code == 0 and "saturated counts:" in r.output and "beyond" in r.output
