"""The fault campaign, seeded and small (the whole one is benchmarks/fault_campaign.py): crafted
and mutated model files, bad options and inputs, every output-path fault, forged and hostile
artifacts (the Lava signal trials run in the long campaign). Every case must end as the contract says
(docs/FAULTS.md): exit 0 with the right output, or exit 2 with one line `error: ...` and nothing
written; never exit 1, a traceback, a hang, a wrong answer, or a leaked process, segment or temp
folder."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import campaign  # noqa: E402


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return campaign._save(campaign.mlp_proto(), tmp_path_factory.mktemp("campaign") / "mlp.onnx")


def test_the_campaign_sample_ends_every_case_as_the_contract_says(tmp_path):
    # a fresh interpreter: this one may have imported Triton for the GPU already
    done = subprocess.run([sys.executable, campaign.__file__, str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert not summary["broken"], "\n".join(summary["broken"])
    counts = summary["classes"]
    assert all(counts[c] == 0 for c in campaign.BAD)
    assert counts["refused"] > 90 and counts["ok"] >= 8  # the sample covers both sides
    assert {"model", "names", "options", "inputs", "outputs", "artifact", "onnx mutants",
            "artifact mutants", "npz mutants"} <= set(summary["families"])


def test_a_case_that_breaks_the_contract_is_classified(mlp, tmp_path):
    """The classifier is not a rubber stamp: an accepted bad option is a wrong answer, a bug
    is internal, a refusal that writes its output is half written."""
    accepted = campaign.Case("k=3 expected refused", "self-test",
                             ["compile", mlp, "--set", "k=3", "-o",
                              str(tmp_path / "o.sbc")], "refused")
    assert campaign.run_case(accepted, tmp_path).outcome == "wrong"
    wrote = campaign.Case("refused but wrote", "self-test", ["compile", "absent.onnx", "-o",
                                                             str(tmp_path / "o.sbc")],
                          "refused", output=str(tmp_path / "o.sbc"))
    (tmp_path / "o.sbc").unlink(missing_ok=True)
    r = campaign.run_case(wrote, tmp_path)
    assert r.outcome == "refused"
    (tmp_path / "o.sbc").write_bytes(b"x")
    r.outcome = ""
    assert campaign.classify(r) == "half_written"
    r.code, r.stderr = 1, "internal error: KeyError: 'x' (rerun with --debug)\n"
    assert campaign.classify(r) == "internal"
