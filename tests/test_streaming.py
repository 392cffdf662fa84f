"""The data-reading passes stream: what they measure equals what the implementation that held a
batch's every activation measured (tests/data/streaming_figures.json, recorded with it), and
does not depend on how the calibration samples are cut into batches."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from streaming_figures import CASES, RECORDED, compile_case, figures  # noqa: E402

from sbcompile.passes.lockstep import side_by_side, watch  # noqa: E402
from sbcompile.pipeline import load_model  # noqa: E402
from sbcompile.runtime.reference import evaluate, values  # noqa: E402


def assert_same(got, want, rel: float, path: str = "") -> None:
    """Equal structure; integers and strings equal; floats within ``rel`` (0: bit for bit)."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            assert_same(got[k], want[k], rel, f"{path}/{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, rel, f"{path}[{i}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=rel, abs_tol=0.0) or got == want, \
            f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got} != {want}"


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


@pytest.mark.parametrize("model,preset", CASES)
def test_streamed_figures_equal_the_recorded_ones(model, preset, recorded):
    """Same batches: layer fidelity (every measure), sparsity, histograms, op counts, count
    bounds and the outputs' fidelity bit for bit."""
    got = json.loads(json.dumps(figures(compile_case(model, preset).report)))
    assert got["layers"] and (preset != "spikingbrain" or got["count_bounds"])
    assert_same(got, recorded[f"{model}/{preset}"], rel=0.0)


@pytest.mark.parametrize("model,preset", CASES)
def test_one_batch_of_all_samples_measures_the_same(model, preset, recorded):
    """All 40 samples in one batch against the recorded batches of 16 (16, 16, 8): integer
    figures (counts, histograms, bounds, op counts) equal, float sums within rounding."""
    got = json.loads(json.dumps(figures(compile_case(model, preset, calib_batch=40).report)))
    assert_same(got, recorded[f"{model}/{preset}"], rel=1e-12)


def test_values_frees_what_no_later_node_reads():
    """The interpreter yields each value as it is made and keeps none it no longer needs: a
    chain's values are released as the chain runs (weak references die)."""
    import weakref

    from streaming_figures import model_and_calib

    path, calib = model_and_calib("corpus_like", 4)
    graph = load_model(path)
    alive, seen = [], []
    for name, arr in values(graph, calib):
        seen.append(name)
        if arr.base is None and name not in graph.outputs:
            alive.append(weakref.ref(arr))
        del arr
    assert len(seen) == len(graph.nodes) + len(graph.inputs)  # one output a node here
    assert sum(r() is not None for r in alive) <= 2
    full = evaluate(graph, calib, keep=seen)
    only = dict(values(graph, calib, only=[seen[3]]))
    np.testing.assert_array_equal(only[seen[3]], full[seen[3]])


def test_side_by_side_pairs_values_and_reports_missing_ones():
    fired = []
    a = [("x", np.ones(1)), ("y", np.full(1, 2.0))]
    b = [("x", np.ones(1)), ("z", np.full(1, 3.0)), ("y", np.full(1, 4.0))]
    side_by_side(iter(a), iter(b), [
        watch({"y"}, {"z", "y"}, lambda f, s: fired.append((f["y"][0], s["z"][0], s["y"][0]))),
        watch({"x"}, {"x"}, lambda f, s: fired.append(("x", f["x"][0], s["x"][0])))])
    assert sorted(map(str, fired)) == sorted(map(str, [("x", 1.0, 1.0), (2.0, 3.0, 4.0)]))
    from sbcompile.errors import SbcError

    with pytest.raises(SbcError, match="'w'"):
        side_by_side(iter(a), iter(b), [watch({"w"}, {"x"}, lambda f, s: None)])
