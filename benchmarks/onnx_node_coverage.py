"""Op coverage on onnx's own backend node tests: per op, the share of cases that lower through
the ONNX frontend and match onnx's expected outputs on the reference interpreter.

Every case of ``onnx.backend.test.case.node.collect_testcases()`` (with its function-expanded
variants) runs through the conformance harness of tests/test_onnx_conformance.py (onnx's
tolerances, same dtype and shape). A case is a *float-op case* unless one of these puts it out of
scope, in this order:
- dtype: a graph input or output sbcompile has no dtype for (bfloat16, float8/4, int4/2,
  uint16/32/64, string) or that is no tensor (sequence, optional);
- op: it uses an op without float semantics (strings, sequences and optionals, quantisation,
  random sampling, bitwise arithmetic, image decoding, text vectorising, the ai.onnx.ml and
  training domains);
- non-finite input: NaN or Inf in an input, which the interpreter refuses by contract.
The headline is the share of float-op cases that pass; per op, a case counts for every op type it
uses (Constant only when alone).

    python benchmarks/onnx_node_coverage.py [--markdown docs/COVERAGE.md] [--json FILE]
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import test_onnx_conformance as harness  # noqa: E402  (the conformance harness, reused)

from sbcompile.ir.graph import DTYPES  # noqa: E402

NON_FLOAT_OPS = {
    "StringConcat", "StringNormalizer", "StringSplit", "RegexFullMatch", "SequenceAt",
    "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional", "OptionalGetElement",
    "OptionalHasElement", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "Bernoulli", "Multinomial",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "BitShift",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitCast", "ImageDecoder",
    "TfIdfVectorizer"}
NON_FLOAT_DOMAINS = ("ai.onnx.ml", "ai.onnx.preview.training")
RESULTS = ROOT / "benchmarks" / "results" / "onnx_node_coverage.json"


def _dtypes(model: onnx.ModelProto) -> set[str]:
    found = set()
    for v in [*model.graph.input, *model.graph.output]:
        if not v.type.HasField("tensor_type"):
            found.add("non-tensor")
            continue
        try:
            found.add(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name)
        except Exception:  # an element type numpy has no dtype for (float4, ...)
            found.add("other")
    return found


def scope(model: onnx.ModelProto, inputs: list) -> str:
    """"float", or why the case is out of scope: "dtype", "op", "non-finite input"."""
    if _dtypes(model) - set(DTYPES):
        return "dtype"
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    if any(d in NON_FLOAT_DOMAINS or op in NON_FLOAT_OPS for d, op in ops):
        return "op"
    for x in inputs:
        arr = np.asarray(x) if not isinstance(x, (list, type(None))) else None
        if arr is not None and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            return "non-finite input"
    return "float"


def run_all(verbose: bool = False) -> list[dict]:
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    rows = []
    for case in cases:
        ops = sorted(harness._op_types(case.model))
        for k, (inputs, outputs) in enumerate(case.data_sets):
            inputs = [harness._array(i) for i in inputs]
            outputs = [harness._array(o) for o in outputs]
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    outcome = harness.run_case(case.model, inputs, outputs, case.rtol, case.atol)
            except Exception as e:  # a wrong answer or a crash
                outcome = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
            rows.append({"case": case.name + (f"[{k}]" if k else ""), "ops": ops,
                         "scope": scope(case.model, inputs),
                         "outcome": outcome.split(":")[0], "detail": outcome})
            if verbose and outcome != "passed":
                print(case.name, outcome)
    return rows


def per_op(rows: list[dict]) -> dict[str, dict]:
    table: dict[str, dict] = collections.defaultdict(lambda: collections.Counter())
    for r in rows:
        for op in r["ops"]:
            key = r["outcome"] if r["scope"] == "float" else "out of scope"
            table[op][key] += 1
    return {op: dict(c) for op, c in sorted(table.items())}


def summary(rows: list[dict]) -> dict:
    floats = [r for r in rows if r["scope"] == "float"]
    passed = sum(r["outcome"] == "passed" for r in floats)
    converted = [r for r in floats if set(r["ops"]) <= harness.CLAIMED]
    return {"cases": len(rows), "float_cases": len(floats), "float_passed": passed,
            "converted_cases": len(converted),
            "converted_passed": sum(r["outcome"] == "passed" for r in converted),
            "float_refused": sum(r["outcome"] == "refused" for r in floats),
            "float_failed": sum(r["outcome"] == "failed" for r in floats),
            "float_share": passed / max(len(floats), 1),
            "all_passed": sum(r["outcome"] == "passed" for r in rows),
            "out_of_scope": dict(collections.Counter(r["scope"] for r in rows
                                                     if r["scope"] != "float"))}


def markdown(rows: list[dict], totals: dict, meta: dict) -> str:
    table = per_op(rows)
    converted_share = totals["converted_passed"] / max(totals["converted_cases"], 1)
    lines = [
        "# ONNX op coverage", "",
        f"Generated by `python benchmarks/onnx_node_coverage.py --markdown docs/COVERAGE.md` "
        f"({meta['date']}, onnx {meta['onnx']}). A case of onnx's backend node tests "
        "(`onnx.backend.test.case.node`, function-expanded variants included) *passes* when the "
        "model lowers through the ONNX frontend and the reference interpreter matches onnx's "
        "expected outputs (onnx's tolerances, same dtype and shape); otherwise it is *refused* "
        "(an UnsupportedError naming the node and the reason) or *failed* (a wrong answer or a "
        "crash). The scope rules are in the script's docstring: cases with dtypes sbcompile "
        "has none for, ops without float semantics, or non-finite inputs are out of scope.", "",
        f"**Float-op cases: {totals['float_passed']} of {totals['float_cases']} pass "
        f"({100 * totals['float_share']:.1f} %)**, {totals['float_refused']} refused, "
        f"{totals['float_failed']} failed. All cases: {totals['all_passed']} of "
        f"{totals['cases']} pass; out of scope: "
        + ", ".join(f"{v} ({k})" for k, v in sorted(totals["out_of_scope"].items())) + ". "
        f"Of the float-op cases whose every op has a converter, {totals['converted_passed']} of "
        f"{totals['converted_cases']} pass ({100 * converted_share:.1f} %; the rest are "
        "attribute values or runtime operands refused by name).", "",
        "## Per op", "",
        "A case counts for every op type its graph uses (Constant only when alone), so "
        "expanded variants count for the ops of their function body.", "",
        "| op | float cases | passed | refused | failed | share | out of scope |",
        "|---|---|---|---|---|---|---|"]
    for op, c in table.items():
        n = c.get("passed", 0) + c.get("refused", 0) + c.get("failed", 0)
        share = f"{100 * c.get('passed', 0) / n:.0f} %" if n else "-"
        lines.append(f"| {op} | {n} | {c.get('passed', 0)} | {c.get('refused', 0)} | "
                     f"{c.get('failed', 0)} | {share} | {c.get('out of scope', 0)} |")
    lines += ["", "## Float-op cases that do not pass, by reason", ""]
    reasons = collections.Counter()
    for r in rows:
        if r["scope"] == "float" and r["outcome"] != "passed":
            reasons[_reason(r["detail"])] += 1
    for reason, count in reasons.most_common():
        lines.append(f"- {count} x {reason}")
    return "\n".join(lines) + "\n"


def _not_passed(rows: list[dict]) -> list[dict]:
    """The float-op cases that do not pass, with their outcome."""
    return [{"case": r["case"], "detail": r["detail"][:200]} for r in rows
            if r["scope"] == "float" and r["outcome"] != "passed"]


def _reason(detail: str) -> str:
    """A refusal's reason without the case-specific node and value names."""
    import re
    text = re.sub(r"node '[^']*' \(([^)]*)\)", r"\1", detail)
    text = re.sub(r"(value|input|output|constant) '[^']*'", r"\1", text)
    text = re.sub(r" \(and \d+ more unsupported nodes\)", "", text)
    return text.replace("|", "/")[:160]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="write the coverage page here")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = run_all(args.verbose)
    totals = summary(rows)
    meta = {"date": date.today().isoformat(), "onnx": onnx.__version__,
            "machine": platform.machine(), "seconds": round(time.perf_counter() - start, 1)}
    print(f"{'op':<28}{'float':>7}{'passed':>8}{'refused':>9}{'failed':>8}{'out':>6}")
    for op, c in per_op(rows).items():
        n = c.get("passed", 0) + c.get("refused", 0) + c.get("failed", 0)
        print(f"{op:<28}{n:>7}{c.get('passed', 0):>8}{c.get('refused', 0):>9}"
              f"{c.get('failed', 0):>8}{c.get('out of scope', 0):>6}")
    print(f"float-op cases: {totals['float_passed']}/{totals['float_cases']} pass "
          f"({100 * totals['float_share']:.1f} %); with every op converted: "
          f"{totals['converted_passed']}/{totals['converted_cases']}; all cases "
          f"{totals['all_passed']}/{totals['cases']}; {meta['seconds']} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "totals": totals, "per_op": per_op(rows),
                                     "not_passed": _not_passed(rows)}, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(rows, totals, meta))


if __name__ == "__main__":
    main()
