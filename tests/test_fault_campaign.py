"""The fault campaign, seeded and small (the whole one is benchmarks/fault_campaign.py): crafted
and mutated model files, bad options and inputs, every output-path fault, forged and hostile
artifacts, and a SIGKILL of a Lava run mid-simulation. Every case must end as the contract says
(docs/FAULTS.md): exit 0 with the right output, or exit 2 with one line `error: ...` and nothing
written; never exit 1, a traceback, a hang, a wrong answer, or a leaked process, segment or temp
folder."""
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import campaign  # noqa: E402


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    fx = campaign.build_fixtures(tmp_path_factory.mktemp("campaign"))
    campaign.mount_faulty_filesystems(fx)
    yield fx
    campaign.unmount_faulty_filesystems(fx)


FAST_WRITERS = ("compile", "report --json", "run -o")


def _fast(case: campaign.Case) -> bool:
    """The sample CI runs (each case costs a process and, for compile, a compile): one case of
    each Triton-interpreter kind (seconds each), no demo, the output faults of three commands,
    one SIGKILL trial mid-simulation; everything else."""
    if "(triton)" in case.name or "--interpret" in case.argv:
        return case.name in ("--input float32 max (triton)", "forged: triton plan a list")
    if case.argv[:1] == ["demo"] or case.family == "lava":
        return False
    if case.family == "outputs":
        return case.name.split(":")[0] in FAST_WRITERS
    return case.family != "signals" or case.signal_after[0] == signal.SIGKILL


def test_the_campaign_sample_ends_every_case_as_the_contract_says(fixtures, tmp_path):
    cases = [c for c in campaign.build_cases(fixtures, mutants=6, seed=11,
                                             hostile_bytes=1 << 28, lava_trials=1) if _fast(c)]
    results = campaign.run_campaign(cases, tmp_path)
    counts = campaign.tally(results)["classes"]
    failures = [campaign.report_line(r) for r in results if not campaign.passed(r)]
    assert not failures, "\n".join(failures)
    assert all(counts[c] == 0 for c in campaign.BAD)
    assert counts["refused"] > 90 and counts["ok"] >= 8  # the sample covers both sides
    families = {r.case.family for r in results}
    assert {"model", "names", "options", "inputs", "outputs", "artifact", "onnx mutants",
            "artifact mutants", "npz mutants", "signals"} <= families


def test_a_case_that_breaks_the_contract_is_classified(fixtures, tmp_path):
    """The classifier is not a rubber stamp: an accepted bad option is a wrong answer, a bug
    is internal, a refusal that writes its output is half written."""
    accepted = campaign.Case("k=3 expected refused", "self-test",
                             ["compile", fixtures.mlp, "--set", "k=3", "-o",
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
