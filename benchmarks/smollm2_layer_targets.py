"""One real SmolLM2-135M decoder layer, compiled under ``spikingbrain``, on every target: its
integer values (every encoder's counts, every synapse accumulator, the attention's int8 K/V and
integer scores) compared with the reference interpreter's on Lava (a short window), the onnx-qdq
export under onnxruntime and the PyTorch program (CPU here; ``--device cuda`` on a GPU).

The layer's input is the real hidden state entering it (the float model on a held-out
Shakespeare window). ``--save DIR`` keeps the artifact and the input, ``--load DIR`` runs a kept
pair (what the GPU run does: the device needs neither the GGUF nor ``transformers``). Writes
benchmarks/results/smollm2_layer_targets[_DEVICE].json.

    python benchmarks/smollm2_layer_targets.py [--layer 14] [--tokens 8] [--save DIR]
    python benchmarks/smollm2_layer_targets.py --load DIR --device cuda --targets torch
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "smollm2"))
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ("lava", "onnxruntime", "torch")


def build(layer: int, tokens: int):
    """(compiled layer, feeds) from the cached GGUF."""
    import torch

    import sbcompile
    from fetch import is_fetched
    from smollm2_model import layer_graph, load_float
    from text import HELD_OUT, windows

    if not is_fetched():
        raise SystemExit("error: SmolLM2 is not cached: run python examples/smollm2/fetch.py")
    lm, tokenizer = load_float()
    ids = windows(tokenizer, HELD_OUT[:1], 1, tokens)["input_ids"]
    with torch.no_grad():
        hidden = lm(input_ids=torch.from_numpy(ids), output_hidden_states=True,
                    use_cache=False).hidden_states[layer]
    feeds = {"hidden_in": hidden.numpy().astype(np.float32)}
    graph = layer_graph(lm, layer, tokens)
    model = sbcompile.compile(graph, preset="spikingbrain", calib=feeds,
                              overrides={"targets": "lava,torch"})
    return model, feeds


def integer_names(model) -> list[str]:
    from sbcompile.runtime.targets import integer_values

    return integer_values(model.graph)


def compare(model, feeds: dict, target: str, device: str) -> dict:
    from sbcompile.runtime.reference import evaluate

    names = integer_names(model)
    want = evaluate(model.graph, feeds, keep=names)
    start = time.perf_counter()
    if target == "onnxruntime":
        import onnxruntime as ort

        from sbcompile.backends.export_onnx_qdq import to_onnx

        session = ort.InferenceSession(to_onnx(model.graph, names).SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    else:
        result = model.run(feeds, target=target, device=device if target == "torch" else None,
                           timeout=600)
        got = {**result.counts, **result.outputs}
    seconds = time.perf_counter() - start
    values = sum(int(want[n].size) for n in names)
    differ = sum(int(np.sum(np.asarray(got[n]) != want[n])) for n in names)
    out = model.output_names[0]
    return {"target": target, "device": device if target == "torch" else "cpu",
            "integer_tensors": len(names), "integer_values": values, "differing": differ,
            "missing": [n for n in names if n not in got],
            "output_max_abs_diff": float(np.abs(np.asarray(got[out]) - want[out]).max()),
            "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--save", default=None)
    ap.add_argument("--load", default=None)
    args = ap.parse_args()
    import sbcompile
    from sbcompile.npz import load_npz, save_npz

    if args.load:
        model = sbcompile.load(Path(args.load) / "layer.sbc")
        feeds = load_npz(Path(args.load) / "hidden_in.npz")
    else:
        model, feeds = build(args.layer, args.tokens)
    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        model.save(Path(args.save) / "layer.sbc")
        save_npz(Path(args.save) / "hidden_in.npz", feeds)
    rows = [compare(model, feeds, t, args.device) for t in args.targets.split(",")]
    for r in rows:
        print(f"{r['target']:12} {r['device']:5} {r['integer_tensors']} integer tensors, "
              f"{r['integer_values']:,} values, {r['differing']} differ; output max |diff| "
              f"{r['output_max_abs_diff']:.3g} ({r['seconds']:.1f} s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    (RESULTS / f"smollm2_layer_targets{suffix}.json").write_text(json.dumps(
        {"layer": args.layer if not args.load else "loaded", "tokens": int(
            feeds["hidden_in"].shape[1]), "rows": rows}, indent=1) + "\n")
    return 0 if all(r["differing"] == 0 and not r["missing"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
