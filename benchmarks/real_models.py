"""Real trained models as they come (the corpus of benchmarks/fetch_models.py): does each lower,
match onnxruntime in float, keep its task under `spikingbrain` and `loihi2`, run bit-exact on
Lava, export to QDQ that a default onnxruntime session runs exactly, and what does compiling
cost.

Per model, in a fresh process (its peak RSS is the model's own):
- lowers: the ONNX file (input dims pinned as below) becomes an IR graph;
- float parity: the reference interpreter vs onnxruntime on the evaluation inputs, max relative
  error = max |ours - ort| / max |ort| over every output (goal <= 1e-4);
- task agreement, spiked vs float on the same inputs, compiled as `sbcompile compile --calib`
  compiles (its default repair below a worst-output cosine of 0.99; what it kept float and the
  energy against the untuned preset's in the repair table), per model: argmax (classifiers),
  greedy CTC strings (text readers), thresholded masks (detectors' maps: IoU), decisions
  (score > 0.5), cosine (embeddings and features);
- Lava: one input simulated (spikingbrain artifact); counts and accumulators vs the reference;
- onnx-qdq: the export run by a default onnxruntime session (all graph optimisations); counts
  and accumulators vs the reference, for both presets;
- compile seconds per preset and the process's peak RSS after compiling.
Inputs come from benchmarks/real_model_inputs.py (nothing downloaded). Writes
benchmarks/results/real_models.json and prints a markdown table.

    python benchmarks/fetch_models.py            # once: the corpus into the cache
    python benchmarks/real_models.py [--only NAME ...] [--cache DIR] [--lava-timeout S]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np

from sbcompile.memory import mib, peak_rss_bytes

sys.path.insert(0, str(Path(__file__).parent))
import real_model_inputs as inp  # noqa: E402
from fetch_models import BY_NAME, MODELS, cache_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "real_models.json"
PRESETS = ("spikingbrain", "loihi2")
TARGETS = {"targets": "lava,triton,onnxruntime"}  # the stored programs every run below uses


# ---- tasks: agreement of the spiked model's task output with the float model's ---------------
def _argmax(f, s):
    return float(np.mean(f.argmax(-1) == s.argmax(-1)))


def _ctc(blank: int, time_axis_first: bool = False):
    def decode(out):
        ids = out.argmax(-1)
        ids = ids.T if time_axis_first else ids
        seqs = []
        for row in np.atleast_2d(ids):
            keep = [int(c) for i, c in enumerate(row) if c != blank and (i == 0 or c != row[i - 1])]
            seqs.append(tuple(keep))
        return seqs

    def agree(f, s):
        a, b = decode(f), decode(s)
        return float(np.mean([x == y for x, y in zip(a, b)]))
    return agree


def _mask_iou(threshold: float):
    def agree(f, s):
        a, b = f > threshold, s > threshold
        union = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum() / union) if union else 1.0
    return agree


def _decision(threshold: float = 0.5):
    def agree(f, s):
        return float(np.mean((f > threshold) == (s > threshold)))
    return agree


def _cosine(f, s):
    a, b = f.reshape(f.shape[0], -1).astype(np.float64), s.reshape(s.shape[0], -1)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30
    return float(np.mean(num / den))


def _yolo_rows(f, s):
    """YOLOv8 [B, 4 + classes, anchors]: the best anchor's class and its score over 0.25."""
    def best(out):
        scores = out[:, 4:, :]
        flat = scores.reshape(scores.shape[0], -1).argmax(1)
        cls, anchor = np.unravel_index(flat, scores.shape[1:])
        return [(int(c), bool(scores[i, c, a] > 0.25)) for i, (c, a) in enumerate(zip(cls, anchor))]
    return float(np.mean([x == y for x, y in zip(best(f), best(s))]))


def _yolox_objects(f, s):
    """YOLOX [B, anchors, 4 + obj + classes]: the set of anchors with obj * cls > 0.3 (IoU)."""
    def hits(out):
        return (out[..., 4:5] * out[..., 5:]).max(-1) > 0.3
    return _mask_iou(0.5)(hits(f).astype(float), hits(s).astype(float))


@dataclass
class Spec:
    feeds: Callable  # (rng, n, cache) -> list of feeds
    output: str      # the output the task reads
    task: str        # its name in the table
    agree: Callable  # (float output, spiked output) -> agreement in [0, 1]
    shapes: dict | None = None  # input dims pinned (others stay dynamic, or are pinned from
    #                             the calibration data where a lowering needs them static)
    n: int = 12                 # calibration feeds (and as many evaluation feeds)


def _ocr_cls(rng, n, cache):
    feeds = []
    for i in range(n):
        line, _ = inp.text_line(rng, 48, 192)
        img = line if i % 2 == 0 else line[::-1, ::-1]  # upright / turned 180 degrees
        feeds.append({"x": inp.nchw(img[None], 0.5, 0.5)})
    return feeds


def _ocr_rec(rng, n, cache):
    return [{"x": inp.nchw(inp.text_line(rng, 48, 320)[0][None], 0.5, 0.5)} for _ in range(n)]


def _ocr_det(rng, n, cache):
    return [{"x": inp.nchw(inp.text_page(rng, 256, 256)[None], (0.485, 0.456, 0.406),
                           (0.229, 0.224, 0.225))} for _ in range(n)]


def _photos(size, layout="nchw", scale=(0.0, 1.0)):
    def build(rng, n, cache):
        crops = inp.photo_crops(rng, n, size, size)
        feeds = []
        for crop in crops:
            x = (crop[None].astype(np.float32) / 255.0 - scale[0]) / scale[1]
            feeds.append(x.transpose(0, 3, 1, 2).astype(np.float32) if layout == "nchw"
                         else x.astype(np.float32))
        return feeds
    return build


def _named(name, build):
    def feeds(rng, n, cache):
        return [{name: x} for x in build(rng, n, cache)]
    return feeds


def _dddd_ocr(rng, n, cache):
    feeds = []
    for _ in range(n):
        line = inp.text_line(rng, 64, 192)[0].mean(-1, keepdims=True).astype(np.uint8)
        feeds.append({"input1": inp.nchw(line[None], 0.5, 0.5)})
    return feeds


def _audio(rng, n, seconds):
    return [inp.audio_clip(rng, seconds, i) for i in range(n)]


def _melspec(rng, n, cache):
    return [{"input": (a * 32767)[None]} for a in _audio(rng, n, 1.0)]


def _embedding(rng, n, cache):
    return [{"input_1": inp.mel_frames(cache, a)[None, :76, :, None].astype(np.float32)}
            for a in _audio(rng, n, 1.0)]


def _wake(name, windows=16):
    def feeds(rng, n, cache):
        seconds = (76 + 8 * windows) * 0.01 + 0.4
        return [{name: inp.wake_embeddings(cache, a, windows)} for a in _audio(rng, n, seconds)]
    return feeds


def _silero(rng, n, cache):
    state = np.zeros((1, 1, 128), np.float32)
    return [{"input": inp.vad_chunks(a, 8), "h": state, "c": state}
            for a in _audio(rng, n, 8 * 512 / inp.SR + 0.01)]


def _silero_if(rng, n, cache):
    return [{"input": a[None, :512], "state": np.zeros((2, 1, 128), np.float32),
             "sr": np.array(16000, np.int64)} for a in _audio(rng, n, 0.04)]


def _akiki(rng, n, cache):
    return [{"audio_with_context": inp.vad_chunks(a, 1), "h": np.zeros((1, 1, 128), np.float32)}
            for a in _audio(rng, n, 0.04)]


def _silero_sr(rng, n, cache):
    """16 kHz chunks of 512 samples with the sample rate given once (a scalar input)."""
    return [{"input": a[None, :512], "state": np.zeros((2, 1, 128), np.float32),
             "sr": np.array(16000, np.int64)} for a in _audio(rng, n, 0.04)]


def _seizure(rng, n, cache):
    """30 s of iEEG at 500 Hz as the model's 100-bin spectrogram (59 frames)."""
    return [{"x": inp.eeg_spectrogram(inp.eeg(rng, 30.0, 500, i), 500)[None]} for i in range(n)]


def _spindles(rng, n, cache):
    feeds = []
    for i in range(n):
        x = inp.eeg(rng, 30.0, 250, i)
        feeds.append({"raw_signal": ((x - x.mean()) / x.std())[None, None].astype(np.float32),
                      "spectrogram": inp.eeg_scalogram(x - x.mean())[None]})
    return feeds


def _minilm(rng, n, cache):
    feeds = []
    for _ in range(n):
        ids = inp.token_ids(rng, 16)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids),
                      "token_type_ids": np.zeros_like(ids)})
    return feeds


def _time_argmax(f, s):
    return float(np.mean(f.argmax(-1) == s.argmax(-1)))


def _attacut(rng, n, cache):
    return [{"input": inp.attacut_ids(cache, inp.thai_text(cache, rng, 48))} for _ in range(n)]


def _deepcut(rng, n, cache):
    feeds = []
    for _ in range(n):
        chars, kinds = inp.deepcut_features(inp.thai_text(cache, rng, 32))
        feeds.append({"input_1": chars, "input_2": kinds})
    return feeds


TIMER_OUTPUT = ('{"1": "1_minute_timer", "2": "5_minute_timer", "3": "10_minute_timer", "4": '
                '"20_minute_timer", "5": "30_minute_timer", "6": "1_hour_timer"}')  # its name
SPECS: dict[str, Spec] = {
    "ppocr_cls": Spec(_ocr_cls, "save_infer_model/scale_0.tmp_1", "orientation argmax", _argmax,
                      {"x": ["batch", 3, 48, 192]}),
    "ppocr_det": Spec(_ocr_det, "sigmoid_0.tmp_0", "text mask IoU (p>0.3)", _mask_iou(0.3),
                      {"x": [1, 3, 256, 256]}, n=4),
    "ppocr_rec": Spec(_ocr_rec, "softmax_11.tmp_0", "CTC string equal", _ctc(0),
                      {"x": [1, 3, 48, 320]}, n=8),
    "nudenet_320n": Spec(_named("images", _photos(320)), "output0", "best box class",
                         _yolo_rows, {"images": [1, 3, 320, 320]}, n=4),
    "mtcnn_onet": Spec(_named("input_3", _photos(48, "nhwc", (0.5, 0.5))), "softmax_2",
                       "face/non-face argmax", _argmax),
    "mtcnn_rnet": Spec(_named("input_2", _photos(24, "nhwc", (0.5, 0.5))), "softmax_1",
                       "face/non-face argmax", _argmax),
    "mtcnn_pnet": Spec(_named("input_1", _photos(48, "nhwc", (0.5, 0.5))), "softmax",
                       "face map argmax", _argmax, {"input_1": ["N", 48, 48, 3]}),
    "ddddocr_ocr": Spec(_dddd_ocr, "387", "CTC string equal", _ctc(0, time_axis_first=True),
                        n=8),
    "ddddocr_det": Spec(_named("images", _photos(416)), "output", "objects IoU (>0.3)",
                        _yolox_objects, n=4),
    "oww_melspec": Spec(_melspec, "output", "mel cosine", _cosine,
                        {"input": [1, 16000]}),
    "oww_embedding": Spec(_embedding, "conv2d_19", "embedding cosine", _cosine),
    "oww_alexa": Spec(_wake("onnx::Flatten_0"), "13", "wake decision (>0.5)", _decision()),
    "oww_hey_marvin": Spec(_wake("onnx::Flatten_0"), "39", "wake decision (>0.5)",
                           _decision()),
    "oww_timer": Spec(_wake("onnx::Flatten_0", 34), TIMER_OUTPUT, "intent argmax", _argmax),
    "oww_hey_jarvis": Spec(_wake("x.1"), "53", "wake decision (>0.5)", _decision()),
    "oww_hey_mycroft": Spec(_wake("input_1"), "dense", "wake decision (>0.5)", _decision()),
    "silero_vad": Spec(_silero, "speech_probs", "speech decision (>0.5)", _decision()),
    "silero_vad_sr": Spec(_silero_sr, "output", "speech decision (>0.5)", _decision()),
    "eeg_seizure": Spec(_seizure, "probs", "class argmax per 0.5 s", _time_argmax, n=6),
    "eeg_spindles": Spec(_spindles, "segmentation", "spindle mask IoU (p>0.5)", _mask_iou(0.5),
                         n=6),
    "minilm_int8": Spec(_minilm, "last_hidden_state", "token embedding cosine", _cosine, n=8),
    "silero_vad_if": Spec(_silero_if, "output", "speech decision (>0.5)", _decision()),
    "akiki_vad": Spec(_akiki, "probability", "speech decision (>0.5)", _decision()),
    "attacut_c": Spec(_attacut, "output", "word boundary (>0)", _decision(0.0),
                      {"input": [1, 48]}),
    "deepcut": Spec(_deepcut, "dense_13", "word boundary (>0.5)", _decision(),
                    {"input_1": [32, 21], "input_2": [32, 21]}),
}


# ---- one model, in its own process ---------------------------------------------------------------
def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _ort_session(model, optimisation=None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if optimisation is not None:
        opts.graph_optimization_level = optimisation
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _max_rel(ours: dict, ort_out: dict) -> float:
    worst = 0.0
    for name, want in ort_out.items():
        got = np.asarray(ours[name], np.float64)
        want = np.asarray(want, np.float64)
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
        worst = max(worst, float(np.abs(got.reshape(want.shape) - want).max(initial=0.0)) / scale)
    return worst


def _integer_values(graph) -> list[str]:
    return [v for info in graph.meta.get("layers", {}).values() for v in (info["counts"],
                                                                          info["acc"])]


def _counts(graph) -> list[str]:
    return [info["counts"] for info in graph.meta.get("layers", {}).values()]


def _compare_integers(got: dict, want: dict, names: list[str]) -> dict:
    differ = [n for n in names if not np.array_equal(np.asarray(got[n]).reshape(
        np.shape(want[n])), want[n])]
    return {"exact": not differ, "tensors": len(names), "differ": len(differ),
            "first": differ[0] if differ else None}


def measure_one(name: str, cache: Path, lava_timeout: float,
                targets: str = TARGETS["targets"]) -> dict:
    from sbcompile.backends.export_onnx_qdq import to_onnx
    from sbcompile.config import make_config
    from sbcompile.pipeline import compile_graph, load_model
    from sbcompile.runtime import reference
    from sbcompile.tune import default_repair

    spec, model = SPECS[name], BY_NAME[name]
    path = cache / f"{name}.onnx"
    rng = np.random.default_rng(14)
    calib = spec.feeds(rng, spec.n, cache)
    evals = spec.feeds(rng, spec.n, cache)
    row = {"model": name, "domain": model.domain, "exporter": model.exporter,
           "package": f"{model.package}=={model.version}", "task": spec.task,
           "file_mb": round(path.stat().st_size / 2 ** 20, 2)}
    try:
        t0 = time.perf_counter()
        graph = load_model(path, spec.shapes, calib)  # dims a lowering needs pinned from it
        row["lower_s"] = round(time.perf_counter() - t0, 2)
        row["lowers"] = True
    except Exception as e:  # noqa: BLE001 - the table records why
        row.update(lowers=False, lower_error=_why(e))
        return row
    row["parameters"] = int(sum(p.size for p in graph.params.values()))
    try:
        session = _ort_session(str(path))
        ort_names = [o.name for o in session.get_outputs()]
        worst, float_outs = 0.0, []
        for feed in evals:
            ours = reference.run(graph, feed)
            theirs = dict(zip(ort_names, session.run(None, feed)))
            worst = max(worst, _max_rel(ours, theirs))
            float_outs.append(ours[spec.output])
        row["float_max_rel"] = worst
    except Exception as e:  # noqa: BLE001
        row["float_error"] = _why(e)
        return row
    arts = {}
    for preset in PRESETS:
        entry = row.setdefault(preset, {})
        try:
            t0 = time.perf_counter()
            config = default_repair(make_config(preset, {"targets": targets}), {}, False)
            art = compile_graph(graph, config, calib)  # as `sbcompile compile --calib` does
            entry["compile_s"] = round(time.perf_counter() - t0, 2)
            entry["peak_rss_mb"] = round(mib(peak_rss_bytes()))
            arts[preset] = art
            spiked = [reference.run(art.graph, feed)[spec.output] for feed in evals]
            entry["agreement"] = float(np.mean([spec.agree(f, s)
                                                for f, s in zip(float_outs, spiked)]))
            layers = art.report.get("layers", [])
            cos = [(layer["fidelity"]["output"]["cosine"], layer["name"]) for layer in layers
                   if layer.get("fidelity", {}).get("output", {}).get("cosine") is not None]
            if cos:
                entry["worst_layer"] = {"cosine": min(cos)[0], "name": min(cos)[1]}
            entry["layers_spiked"] = len(layers)
            repair = art.report.get("tune")
            if repair:  # compile's automatic repair ran: what it kept float, what it cost
                entry["repair"] = {
                    "seconds": round(repair["seconds"], 1), "evaluations": repair["evaluations"],
                    "untuned_cosine": repair["untuned"]["metric"],
                    "repaired_cosine": repair["chosen"]["metric"],
                    "untuned_energy_pJ": repair["untuned"]["energy_pJ"],
                    "repaired_energy_pJ": repair["chosen"]["energy_pJ"],
                    "kept_float": sorted(n for n, v in repair["layers"].items()
                                         if v.get("float"))}
            entry["targets"] = {t: s.get("lowered") for t, s in
                                art.report.get("targets", {}).items()}
        except Exception as e:  # noqa: BLE001
            entry["error"] = _why(e)
    for preset, art in arts.items():
        entry = row[preset]
        keep = _counts(art.graph)  # accumulators stay internal: rewrites may touch them
        try:
            model_q = to_onnx(art.graph, keep)
            sess = _ort_session(model_q)
            names = [o.name for o in sess.get_outputs()]
            result = {"exact": True, "tensors": 0, "differ": 0}
            for feed in evals[:2]:
                feed = reference.guarded_feeds(art.graph, feed)  # inputs fixed at compile
                want = reference.evaluate(art.graph, feed, keep=keep)
                got = dict(zip(names, sess.run(None, feed)))
                r = _compare_integers(got, want, keep)
                result = {"exact": result["exact"] and r["exact"], "tensors": r["tensors"],
                          "differ": max(result["differ"], r["differ"]),
                          "first": result.get("first") or r["first"]}
            entry["qdq_default_session"] = result
        except Exception as e:  # noqa: BLE001
            entry["qdq_default_session"] = {"error": _why(e)}
    for preset, art in arts.items():
        try:
            row[preset]["throughput"] = _throughput(graph, art, path, evals, spec.output)
        except Exception as e:  # noqa: BLE001
            row[preset]["throughput"] = {"error": _why(e)}
    if "spikingbrain" in arts and "lava" in targets:
        art = arts["spikingbrain"]
        try:
            from sbcompile.api import CompiledModel

            t0 = time.perf_counter()  # CompiledModel.run specialises dynamic dims to the input
            got = CompiledModel(art).run(evals[0], "lava", timeout=lava_timeout).counts
            keep = _integer_values(art.graph)
            want = reference.evaluate(art.graph, evals[0], keep=keep)
            row["lava"] = {**_compare_integers(got, want, keep),
                           "seconds": round(time.perf_counter() - t0, 1)}
        except Exception as e:  # noqa: BLE001
            row["lava"] = {"error": _why(e)}
    row["peak_rss_mb"] = round(mib(peak_rss_bytes()))
    return row


def _batched(graph, feeds: list[dict]) -> list[dict]:
    """The evaluation feeds as one batch when every input's batch axis is dynamic."""
    dynamic = all(graph.values[n].shape and isinstance(graph.values[n].shape[0], str)
                  for n in graph.inputs)
    if not dynamic or len(feeds) < 2:
        return feeds
    return [{k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}]


def _best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _throughput(graph, art, path: Path, evals: list[dict], output: str) -> dict:
    """Seconds over the evaluation set: onnxruntime on the float model, the onnxruntime target
    on the spiked export, the reference interpreter; and how far the target's outputs are from
    the reference's (its counts are checked in the QDQ column: same export, same session)."""
    from sbcompile.runtime import reference
    from sbcompile.runtime.targets import stored_program

    feeds = _batched(graph, evals)
    session = _ort_session(str(path))
    program = stored_program(art.programs, art.graph, "onnxruntime", art.report)
    t_float = _best_time(lambda: [session.run(None, f) for f in feeds])
    t_target = _best_time(lambda: [program.run(f, progress=False) for f in feeds])
    t_ref = _best_time(lambda: [reference.run(art.graph, f) for f in feeds], repeats=1)
    rel = max(_max_rel(program.run(f, progress=False), reference.run(art.graph, f))
              for f in feeds)
    return {"samples": len(evals), "ort_float_s": t_float, "ort_target_s": t_target,
            "reference_s": t_ref, "target_vs_float": t_target / t_float,
            "output_max_rel_vs_reference": rel}


# ---- the table -----------------------------------------------------------------------------------
def _cell_agree(entry: dict) -> str:
    if "error" in entry:
        return "refused"
    text = f"{100 * entry['agreement']:.1f} %"
    worst = entry.get("worst_layer")
    return text + (f" (min cos {worst['cosine']:.2f})" if worst else "")


def _cell_exact(result: dict | None) -> str:
    if not result:
        return "-"
    if "error" in result:
        return "refused"
    return "exact" if result["exact"] else f"{result['differ']}/{result['tensors']} differ"


def table(rows: list[dict]) -> str:
    head = ("| model | domain | exporter | lowers | float max rel | task | spikingbrain | loihi2 "
            "| Lava (1 input) | QDQ default session sb / loihi2 | compile s sb / loihi2 | peak MB |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        if not r.get("lowers"):
            why = r.get("lower_error", r.get("error", "?")).split(": ", 1)[-1]
            lines.append(f"| {r['model']} | {r['domain']} | {r['exporter']} | no: {why[:90]} "
                         "| | | | | | | | |")
            continue
        sb, lo = r.get("spikingbrain", {}), r.get("loihi2", {})
        rel = r.get("float_max_rel")
        lines.append(
            f"| {r['model']} | {r['domain']} | {r['exporter']} | yes "
            f"| {rel:.1e} | {r['task']} " if rel is not None else
            f"| {r['model']} | {r['domain']} | {r['exporter']} | yes | error | {r['task']} ")
        lines[-1] += (f"| {_cell_agree(sb) if sb else '-'} | {_cell_agree(lo) if lo else '-'} "
                      f"| {_cell_exact(r.get('lava'))} "
                      f"| {_cell_exact(sb.get('qdq_default_session'))} / "
                      f"{_cell_exact(lo.get('qdq_default_session'))} "
                      f"| {sb.get('compile_s', '-')} / {lo.get('compile_s', '-')} "
                      f"| {r.get('peak_rss_mb', '-')} |")
    return "\n".join(lines)


def repair_table(rows: list[dict]) -> str:
    """compile's automatic repair where it ran: the worst output cosine and the energy per
    inference (the report's spiking estimate plus the MACs of the layers kept float) of the
    untuned preset and of the repaired settings."""
    lines = ["| model | preset | cosine untuned -> repaired | energy untuned -> repaired | "
             "kept float | layers | seconds |", "|" + "---|" * 7]
    for r in rows:
        for preset in PRESETS:
            e = r.get(preset, {})
            rep = e.get("repair")
            if not rep:
                continue
            lines.append(f"| {r['model']} | {preset} | {rep['untuned_cosine']:.4f} -> "
                         f"{rep['repaired_cosine']:.4f} | {rep['untuned_energy_pJ'] / 1e6:.3g} -> "
                         f"{rep['repaired_energy_pJ'] / 1e6:.3g} uJ | {len(rep['kept_float'])} "
                         f"| {e.get('layers_spiked', '-')} | {rep['seconds']} |")
    return "\n".join(lines)


def throughput_table(rows: list[dict]) -> str:
    lines = ["| model | preset | samples | onnxruntime float ms | onnxruntime target ms | target / "
             "float | reference ms | outputs vs reference (max rel) |", "|" + "---|" * 8]
    for r in rows:
        for preset in PRESETS:
            t = r.get(preset, {}).get("throughput")
            if not t or "error" in t:
                continue
            lines.append(f"| {r['model']} | {preset} | {t['samples']} | "
                         f"{1e3 * t['ort_float_s']:.1f} | {1e3 * t['ort_target_s']:.1f} | "
                         f"{t['target_vs_float']:.2f}x | {1e3 * t['reference_s']:.0f} | "
                         f"{t['output_max_rel_vs_reference']:.1e} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--lava-timeout", type=float, default=120.0)
    ap.add_argument("--targets", default=TARGETS["targets"],
                    help="targets lowered at compile (leave out lava to bound memory)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    cache = cache_dir(args.cache)
    if args.one:
        try:
            row = measure_one(args.one, cache, args.lava_timeout, args.targets)
        except Exception as e:  # noqa: BLE001
            row = {"model": args.one, "error": _why(e), "trace": traceback.format_exc()[-2000:]}
        print("ROW " + json.dumps(row))
        return 0
    names = args.only or [m.name for m in MODELS]
    missing = [n for n in names if not (cache / f"{n}.onnx").is_file()]
    if missing:
        print(f"error: {missing[0]} is not in {cache}: run benchmarks/fetch_models.py first",
              file=sys.stderr)
        return 2
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--cache", str(cache),
                                   "--lava-timeout", str(args.lava_timeout),
                                   "--targets", args.targets],
                                  capture_output=True, text=True, timeout=args.timeout)
            found = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
            row = json.loads(found[-1][4:]) if found else {
                "model": name, "error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "error": f"over {args.timeout:.0f} s"}
        m = BY_NAME[name]
        row.setdefault("domain", m.domain)
        row.setdefault("exporter", m.exporter)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'trace'})}",
              flush=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    merged = {r["model"]: r for r in previous.get("rows", [])}
    merged.update({r["model"]: r for r in rows})
    ordered = [merged[m.name] for m in MODELS if m.name in merged]
    RESULTS.write_text(json.dumps({"machine": f"{platform.machine()}, {platform.system()}",
                                   "date": str(date.today()), "rows": ordered}, indent=1))
    print(table(ordered))
    print()
    print(repair_table(ordered))
    print()
    print(throughput_table(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
