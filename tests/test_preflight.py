"""The pre-flight estimate: a compile whose estimated peak passes ``max_memory`` is refused
before any pass runs, in one line naming the estimate and the key that lowers it."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from streaming_figures import DIGITS, model_and_calib  # noqa: E402

from sbcompile import preflight  # noqa: E402
from sbcompile.cli import main  # noqa: E402
from sbcompile.config import make_config  # noqa: E402
from sbcompile.errors import SbcError  # noqa: E402
from sbcompile.passes.calibrate import check_calibration  # noqa: E402
from sbcompile.pipeline import load_model  # noqa: E402


def test_refused_before_any_pass_in_one_line(tmp_path):
    out = tmp_path / "digits.sbc"
    result = CliRunner().invoke(main, ["-v", "compile", str(DIGITS / "model.onnx"), "--calib",
                                       str(DIGITS / "calib.npz"), "--set", "max_memory=1M",
                                       "-o", str(out)])
    assert result.exit_code == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "compiling needs about" in errors[0] and "max_memory is 1 MB" in errors[0]
    assert "raise max_memory" in errors[0]
    assert not re.search(r"^sbcompile\.pipeline: .+: [0-9.]+ s, peak", result.stderr,
                         re.MULTILINE)  # no stage ran
    assert not out.exists()


def test_the_batch_is_cut_to_bounded_activations():
    """A batch holds at most calib_batch samples and at most about BATCH_ACTIVATIONS of
    activations (the corpus-like model: about 2 MB a sample, so 64 samples at calib_batch 64
    run in batches of fewer)."""
    path, calib = model_and_calib("corpus_like", 64)
    graph = load_model(path)
    config = make_config("spikingbrain", {"calib_batch": "64", "targets": ""})
    est = preflight.estimate(graph, config, check_calibration(graph, calib))
    assert 1 <= est.batch < 64
    assert est.batch == preflight.BATCH_ACTIVATIONS // est.per_sample
    assert est.activations <= preflight.BATCH_ACTIVATIONS


def test_the_refusal_names_the_batch_that_fits():
    """A model with a dynamic batch: the limit between the estimate at a smaller batch and at
    the planned one; the refusal names that smaller calib_batch, which then passes."""
    path, calib = model_and_calib("corpus_like", 64)
    graph = load_model(path)
    config = make_config("spikingbrain", {"calib_batch": "64", "targets": ""})
    data = check_calibration(graph, calib)
    est = preflight.estimate(graph, config, data)
    assert est.batch > 8 and est.per_sample > 0
    limit = (est.with_batch(4) + est.with_batch(8)) // 2
    tight = make_config("spikingbrain", {"calib_batch": "64", "targets": "",
                                         "max_memory": str(limit)})
    with pytest.raises(SbcError, match=r"--set calib_batch=4 needs about") as e:
        preflight.check(graph, tight, data)
    assert f"activations of a batch of {est.batch}" in str(e.value) and "\n" not in str(e.value)
    fits = make_config("spikingbrain", {"calib_batch": "4", "targets": "",
                                        "max_memory": str(limit)})
    assert preflight.check(graph, fits, data).batch == 4


def test_estimate_grows_with_the_batch_and_the_targets():
    path, calib = model_and_calib("corpus_like", 32)
    graph = load_model(path)
    data = check_calibration(graph, calib)
    small = preflight.estimate(graph, make_config("spikingbrain", {"calib_batch": "4",
                                                                   "targets": ""}), data)
    large = preflight.estimate(graph, make_config("spikingbrain", {"calib_batch": "32",
                                                                   "targets": ""}), data)
    lowered = preflight.estimate(graph, make_config("spikingbrain", {"calib_batch": "4",
                                                                     "targets": "lava,triton"}),
                                 data)
    assert large.activations > 4 * small.activations
    assert lowered.programs > small.programs == 0


@pytest.mark.parametrize("text,value", [("4G", 4 << 30), ("512MiB", 512 << 20),
                                        ("1.5g", int(1.5 * 2 ** 30)), ("1000", 1000)])
def test_max_memory_sizes(text, value):
    assert make_config("spikingbrain", {"max_memory": text}).max_memory_bytes() == value


@pytest.mark.parametrize("text", ["lots", "0", "-1G", "nanG", "G"])
def test_max_memory_refuses_what_is_not_a_size(text):
    with pytest.raises(SbcError, match="max_memory must be a size"):
        make_config("spikingbrain", {"max_memory": text})
