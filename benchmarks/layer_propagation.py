"""Which layer to blame in a deep model: per-layer rankings of the spiking error against what
keeping the top layers float actually recovers, on the real text recogniser ppocr_rec (PP-OCR
mobile v2, 48 spiked layers: a conv backbone and a two-block transformer neck).

Compiled under a preset (default `spikingbrain`) with `sensitivity` on, on calibration lines; the
report ranks the layers by isolated error (only that layer spiked, float inputs), introduced error
(the layer's own error on the inputs it receives in the spiked model), propagated error (at its
output, everything upstream spiked) and end-to-end contribution (the mean output cosine recovered
when that layer alone stays float). For each ranking, the top 1 and top 3 layers are kept float and
the model reads held-out lines (another seed than the calibration's): lines read exactly (greedy
CTC with the model's own character list; letters and digits, words split by single spaces) vs the ground-truth text, and vs the float model's reading.
Excluding layers is done on the compiled graph (`graph_with_float_layers`); the script checks once
that it equals recompiling with `exclude` bit for bit.

    python benchmarks/fetch_models.py                       # once: the corpus
    python benchmarks/layer_propagation.py [--lines 24] [--preset spikingbrain]
Writes benchmarks/results/layer_propagation.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import real_model_inputs as inp  # noqa: E402
from fetch_models import cache_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "layer_propagation.json"
OUTPUT = "softmax_11.tmp_0"
RANKINGS = ("isolated", "introduced", "propagated", "contribution")


def characters(path: Path) -> list[str]:
    """The recogniser's classes: CTC blank, its character list (ONNX metadata), space."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return ["<blank>"] + meta["character"].split("\n") + [" "]


def read(probs: np.ndarray, chars: list[str]) -> str:
    """Greedy CTC: best class per step, repeats merged, blanks dropped."""
    ids = probs[0].argmax(-1)
    return "".join(chars[c] for i, c in enumerate(ids) if c != 0 and (i == 0 or c != ids[i - 1]))


def normalised(text: str) -> str:
    """Letters and digits, words separated by one space (stray marks at the edge are noise)."""
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


def lines(seed: int, n: int) -> tuple[list[dict], list[str]]:
    rng = np.random.default_rng(seed)
    made = [inp.text_line(rng, 48, 320) for _ in range(n)]
    return [{"x": inp.nchw(img[None], 0.5, 0.5)} for img, _ in made], [t for _, t in made]


def reading(graph, feeds, truth, chars, float_texts=None) -> dict:
    from sbcompile.runtime import reference

    texts = [read(reference.run(graph, f)[OUTPUT], chars) for f in feeds]
    texts = [normalised(t) for t in texts]
    row = {"read_correct": float(np.mean([a == normalised(b) for a, b in zip(texts, truth)]))}
    if float_texts is not None:
        row["agree_with_float"] = float(np.mean([a == b for a, b in zip(texts, float_texts)]))
    return row, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=24, help="calibration and held-out lines each")
    ap.add_argument("--preset", default="spikingbrain")
    ap.add_argument("--cache", type=Path, default=cache_dir())
    args = ap.parse_args()

    from sbcompile.config import make_config
    from sbcompile.pipeline import compile_graph, load_model
    from sbcompile.passes.propagation import graph_with_float_layers
    from sbcompile.runtime import reference

    path = args.cache / "ppocr_rec.onnx"
    chars = characters(path)
    graph = load_model(path, {"x": [1, 3, 48, 320]})
    calib, _ = lines(14, args.lines)
    evals, truth = lines(15, args.lines)
    config = make_config(args.preset, {"sensitivity": "true"})
    config.targets = []
    t0 = time.perf_counter()
    art = compile_graph(graph, config, calib)
    compile_s = time.perf_counter() - t0
    report = art.report
    fid = report["totals"]["fidelity"]

    float_row, float_texts = reading(graph, evals, truth, chars)
    spiked_row, _ = reading(art.graph, evals, truth, chars, float_texts)
    layers = {r["name"]: r for r in report["layers"]}
    runs = {}
    for by in RANKINGS:
        order = fid["rankings"][by]
        runs[by] = {"top3": order[:3]}
        for k in (1, 3):
            g = graph_with_float_layers(art.graph, graph, order[:k])
            runs[by][f"exclude_top{k}"], _ = reading(g, evals, truth, chars, float_texts)
    # excluding on the compiled graph is what recompiling with --exclude gives
    top = fid["rankings"]["contribution"][0]
    excluded = make_config(args.preset, None, [top])
    excluded.targets = []
    recompiled = compile_graph(graph, excluded, None).graph
    surgery = graph_with_float_layers(art.graph, graph, [top])
    same = all(np.array_equal(reference.run(recompiled, f)[OUTPUT],
                              reference.run(surgery, f)[OUTPUT]) for f in evals[:3])

    def layer_row(name):
        r = layers[name]
        f = r["fidelity"]
        return {"name": name, "op": r["op"], "isolated_cosine": f["isolated"]["cosine"],
                "introduced_cosine": f["introduced"]["cosine"],
                "propagated_cosine": f["output"]["cosine"],
                "introduced_share": f["introduced_share"],
                "recovered_cosine": r["contribution"]["recovered_cosine"]}

    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()} "
              f"{platform.processor() or ''}".strip(), "cpus": _cpus(), "preset": args.preset,
              "lines": args.lines, "layers_spiked": len(layers),
              "compile_with_sensitivity_s": round(compile_s, 1),
              "float": float_row, "spiked": spiked_row,
              "end_to_end_cosine": report["outputs_fidelity"][OUTPUT]["cosine"],
              "rankings": runs, "top_layers": {by: [layer_row(n) for n in runs[by]["top3"]]
                                               for by in RANKINGS},
              "exclude_equals_recompile": same}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def table(r: dict) -> str:
    out = [f"ppocr_rec, {r['preset']}, {r['lines']} held-out lines: float reads "
           f"{r['float']['read_correct']:.1%}, spiked {r['spiked']['read_correct']:.1%} "
           f"(agrees with float on {r['spiked']['agree_with_float']:.1%})", "",
           "| ranking | top-1 layer | its isolated / introduced / propagated cos | recovers "
           "(cos) | read, top-1 float | read, top-3 float | agree w/ float, top-1 / top-3 |",
           "|---|---|---|---|---|---|---|"]
    for by in RANKINGS:
        top = r["top_layers"][by][0]
        run = r["rankings"][by]
        out.append(f"| {by} | {top['name']} | {top['isolated_cosine']:.3f} / "
                   f"{top['introduced_cosine']:.3f} / {top['propagated_cosine']:.3f} | "
                   f"{top['recovered_cosine']:+.4f} | {run['exclude_top1']['read_correct']:.1%} | "
                   f"{run['exclude_top3']['read_correct']:.1%} | "
                   f"{run['exclude_top1']['agree_with_float']:.1%} / "
                   f"{run['exclude_top3']['agree_with_float']:.1%} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
