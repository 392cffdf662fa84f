"""The whole fault campaign (tests/campaign.py; classes in docs/FAULTS.md): crafted ONNX files,
seeded byte-flip mutants of a model, an artifact and an input file, bad options and inputs, every
output-path fault of every command that writes (on a real read-only and a real full file system
where this process can mount them), forged artifacts with recomputed checksums, a hostile
artifact whose small file declares a huge member, and SIGTERM / SIGKILL / SIGINT / SIGHUP trials
against Lava runs mid-simulation. Prints every case that broke the contract and the count of each
outcome class, and writes benchmarks/results/fault_campaign.json.

It also measures what refusing the hostile artifact costs: wall time and the refusing process's
peak RSS, beside `sbcompile report` on the clean artifact it was built from.

    python benchmarks/fault_campaign.py [--mutants 200] [--hostile-mib 2048] [--lava-trials 12]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import campaign  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "fault_campaign.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mutants", type=int, default=200, help="mutants per mutated file kind")
    ap.add_argument("--hostile-mib", type=int, default=2048)
    ap.add_argument("--lava-trials", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sbc-campaign-") as tmp:
        root = Path(tmp)
        fx = campaign.build_fixtures(root / "fixtures")
        campaign.mount_faulty_filesystems(fx)
        try:
            cases = campaign.build_cases(fx, args.mutants, args.seed,
                                         args.hostile_mib << 20, args.lava_trials)
            print(f"{len(cases)} cases (read-only fs: {bool(fx.readonly)}, full fs: "
                  f"{bool(fx.full)})", flush=True)
            results = campaign.run_campaign(cases, root, _progress(len(cases)))
            baseline = campaign.run_case(campaign.Case(
                "report of the clean artifact", "baseline", ["report", fx.mlp_sbc], "ok"), root)
        finally:
            campaign.unmount_faulty_filesystems(fx)
    summary = campaign.tally(results)
    summary["hostile_artifacts"] = [
        {"case": r.case.name, "outcome": r.outcome, "error": r.stderr.strip(),
         "refuse_s": round(r.seconds, 3), "peak_rss_mib": round(r.peak_rss_mb, 1)}
        for r in results if r.case.name.startswith("hostile")]
    summary["clean_report"] = {"s": round(baseline.seconds, 3),
                               "peak_rss_mib": round(baseline.peak_rss_mb, 1)}
    summary["broken"] = [campaign.report_line(r) for r in results if not campaign.passed(r)]
    summary["signal_trials"] = [campaign.report_line(r) for r in results
                                if r.case.family == "signals"]
    summary.update({"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                               f"{platform.system()} {platform.release()}",
                    "date": str(date.today()), "seed": args.seed, "mutants": args.mutants,
                    "wall_s": round(time.monotonic() - started, 1)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))

    print("\nbroke the contract:" if summary["broken"] else "\nno case broke the contract")
    for line in summary["broken"]:
        print(line)
    print(f"\n{summary['cases']} cases in {summary['wall_s']} s")
    print(f"{'class':<16} count")
    for cls, n in summary["classes"].items():
        print(f"{cls:<16} {n}")
    print("\nper family:")
    for fam, counts in summary["families"].items():
        print(f"  {fam:<18} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    clean = summary["clean_report"]
    for h in summary["hostile_artifacts"]:
        print(f"\n{h['case']}: {h['outcome']} in {h['refuse_s']} s, peak RSS "
              f"{h['peak_rss_mib']} MiB ({h['error']})")
    print(f"a clean report: {clean['s']} s, peak RSS {clean['peak_rss_mib']} MiB")
    print(f"wrote {args.out}")


def _progress(total: int):
    done = {"n": 0}

    def report(r: campaign.Result) -> None:
        done["n"] += 1
        if not campaign.passed(r) or done["n"] % 50 == 0:
            print(f"[{done['n']}/{total}] {campaign.report_line(r)}", flush=True)
    return report


if __name__ == "__main__":
    main()
