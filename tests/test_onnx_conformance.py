"""ONNX's own conformance data through the ONNX frontend and the reference interpreter.

Sources: the node cases ``onnx.backend.test.case.node.collect_testcases()`` generates (including
their function-expanded variants) and the ``pytorch-converted`` / ``pytorch-operator`` data sets
shipped with onnx. The latter use opsets 6..12; they are upgraded to opset 13 with
``onnx.version_converter`` first, as a user with an old model would. Every case that uses an op
sbcompile claims must either pass (the onnx backend tolerances, rtol 1e-3 / atol 1e-7, same dtype
and shape) or be refused with an UnsupportedError; every claimed op must pass at least one case.
"""
from __future__ import annotations

import collections
import functools
import glob
import json
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from sbcompile.errors import SbcError, UnsupportedError
from sbcompile.frontends.onnx_frontend import load_onnx
from sbcompile.frontends.onnx_converters import CONVERTERS
from sbcompile.runtime.reference import run

CLAIMED = {op for domain, op in CONVERTERS if domain == ""} | {"Constant"}
DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


@functools.cache
def _cases() -> list[tuple[str, onnx.ModelProto, list, list, float, float]]:
    """(name, model, inputs, expected outputs, rtol, atol) of every case using a claimed op."""
    from onnx.backend.test.case.node import collect_testcases
    cases = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        node_cases = collect_testcases()
    for case in node_cases:
        for inputs, outputs in case.data_sets:
            cases.append((case.name, case.model, [_array(i) for i in inputs],
                          [_array(o) for o in outputs], case.rtol, case.atol))
    for suite in ("pytorch-converted", "pytorch-operator"):
        for folder in sorted(glob.glob(os.path.join(DATA, suite, "*"))):
            model = onnx.load(os.path.join(folder, "model.onnx"))
            for data in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
                inputs = [_read(p) for p in sorted(glob.glob(os.path.join(data, "input_*.pb")))]
                outputs = [_read(p) for p in sorted(glob.glob(os.path.join(data, "output_*.pb")))]
                cases.append((f"{suite}/{os.path.basename(folder)}", model, inputs, outputs,
                              1e-3, 1e-7))
    return [c for c in cases if _op_types(c[1]) & CLAIMED]


def _array(value):
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _read(path: str) -> np.ndarray:
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def _op_types(model: onnx.ModelProto) -> set[str]:
    """The op types a case exercises: its nodes' (other domains prefixed), Constant only when it
    is alone."""
    ops = {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
           for n in model.graph.node}
    return ops - {"Constant"} or ops


def _upgraded(model: onnx.ModelProto) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if version >= 13:
        return model
    try:
        return onnx.version_converter.convert_version(model, 13)
    except Exception as e:  # the converter's own failure: the case cannot be expressed at 13
        raise UnsupportedError(f"onnx.version_converter cannot upgrade it: {e}") from None


def run_case(model, inputs, expected, rtol, atol) -> str:
    """"passed", or "refused: <reason>"; raises AssertionError on a wrong answer. float16 outputs
    may also differ by 2 units in the last place: each IR op rounds to float16, so a multi-op
    graph collects a few ulps (onnxruntime misses test_attention_4d_causal_fp16_expanded by as
    much). Also refusals: non-finite inputs (the interpreter refuses them by contract), models
    onnx's own strict shape inference rejects (the sequence-typed Loop bodies), and an old case
    whose upgraded model takes other inputs than its data (opset 8's batched Scan)."""
    upgraded = _upgraded(model)
    try:
        graph = load_onnx(upgraded)
        json.dumps(graph.to_json(), allow_nan=False)  # the artifact's strict JSON
        feeds = dict(zip(graph.inputs, inputs))
        got = run(graph, feeds)
    except UnsupportedError as e:
        return f"refused: {e}"
    except SbcError as e:
        message = str(e)
        if ("contains NaN or Inf" in message and message.startswith("input ")) or \
                "shape inference failed" in message or \
                (upgraded is not model and message.startswith("input ")):
            return f"refused: {e}"
        raise
    assert len(got) == len(expected), "output count differs"
    for (name, value), want in zip(got.items(), expected):
        value = np.asarray(value)
        want = np.asarray(want)
        assert value.dtype == want.dtype, f"{name}: dtype {value.dtype} != {want.dtype}"
        assert value.shape == want.shape, f"{name}: shape {value.shape} != {want.shape}"
        if want.dtype == np.float16:  # per-op fp16 rounding in a multi-op graph: 2 ulps
            np.testing.assert_allclose(value.astype(np.float32), want.astype(np.float32),
                                       rtol=rtol, atol=2 * float(np.max(np.spacing(want))),
                                       err_msg=name)
        elif want.dtype.kind in "fc":
            np.testing.assert_allclose(value, want, rtol=rtol, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(value, want, err_msg=name)
    return "passed"


def conformance(verbose: bool = False) -> tuple[dict, list]:
    """Per claimed op: [cases, passed, refused]; and the failures (name, message)."""
    table: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    failures = []
    for name, model, inputs, expected, rtol, atol in _cases():
        try:
            with np.errstate(all="ignore"):
                outcome = run_case(model, inputs, expected, rtol, atol)
            if verbose and outcome != "passed":
                print(name, outcome)
        except Exception as e:  # a wrong answer or a crash: both are failures
            outcome = "failed"
            failures.append((name, f"{type(e).__name__}: {str(e).strip()[:300]}"))
        for op in _op_types(model) & CLAIMED:
            row = table[op]
            row[0] += 1
            row[1] += outcome == "passed"
            row[2] += outcome.startswith("refused")
    return dict(table), failures


def _print_table(table: dict) -> None:
    print(f"\n{'op':<22}{'cases':>7}{'passed':>8}{'refused':>9}")
    for op in sorted(table):
        cases, passed, refused = table[op]
        print(f"{op:<22}{cases:>7}{passed:>8}{refused:>9}")
    total = np.sum(list(table.values()), axis=0)
    print(f"{'(case-op pairs)':<22}{total[0]:>7}{total[1]:>8}{total[2]:>9}")


@pytest.fixture(scope="module")
def results():
    return conformance()


def test_every_case_passes_or_is_refused(results, capsys):
    table, failures = results
    with capsys.disabled():
        _print_table(table)
    assert not failures, "\n".join(f"{n}: {m}" for n, m in failures[:20])


# Every onnx case of these needs control known only at run time (a runtime trip count): the
# static forms sbcompile unrolls are covered by tests/test_onnx_control.py.
RUNTIME_CONTROL_ONLY = {"Loop"}


def test_every_claimed_op_passes_a_case(results):
    table, _ = results
    never = sorted(op for op in CLAIMED - RUNTIME_CONTROL_ONLY if table.get(op, [0, 0, 0])[1] == 0)
    assert not never, f"claimed ops that pass no conformance case: {never}"


if __name__ == "__main__":
    t, f = conformance(verbose=True)
    _print_table(t)
    for n, m in f:
        print("FAIL", n, m)
