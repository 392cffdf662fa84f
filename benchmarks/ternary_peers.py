"""The `ternary` preset (T steps of {-1, 0, +1} spikes, T chosen per layer by calibration) on
trained CNNs, beside SpikingJelly's ann2snn rate coding on the same models.

Models:
- digits CNN: the bundled example (examples/digits), its 360 held-out images;
- digits deep CNN: a second CNN (3 conv + 2 linear, batch norm, average pooling) trained here on
  the same split, never used to choose the ternary calibration rule;
- MTCNN R-Net and O-Net: the real trained face detectors of the model corpus
  (benchmarks/fetch_models.py), on scikit-image's `lfw_subset` (100 faces, 100 non-faces,
  upsampled to 24 / 48 px, grey as RGB, (x - 0.5) / 0.5): two-fold, each half calibrates the
  compile that decides the other half, so no decision is made on its own calibration input.
Ours: presets `ternary` (calibrated T <= 8), `ternary --set max_count=1` (one step), `loihi2`
(graded) and `spikingbrain` (bitwise); agreement of the argmax with the float model (and digit
accuracy), T per layer, spikes per neuron, synaptic events per inference (events x fan-out, conv
events counted on the outputs they reach: `passes/analyse.py`), measured on the evaluation inputs.
SpikingJelly (torch modules; its `RateCodingRecipe` converts ReLU nets, so only the digits CNNs):
IF neurons with soft reset, normalisation modes Max, 99.9 %, 99.99 %, 0.5, 1/3; per T the best
mode by agreement. Its spikes are counted from the IF outputs and its synaptic events the same
way as ours: every nonzero input of a Conv2d / Linear times the outputs it reaches, each step.
The first layer of SJ's network reads the analog image at every step (MACs, not spikes): its
input drive is reported apart, and synaptic events are compared both without the first layer
and with it (ours: the image's own spike events; SJ's: nonzero pixels x reach x T).

SpikingJelly and scikit-image are benchmark-only: install them beside the environment, never
into it (spikingjelly pulls tqdm, whose multiprocessing lock breaks Lava's start-up in the tests):

    .venv/bin/pip install --no-deps --target .venv/peers spikingjelly==2.0.0 tqdm==4.70.1 \\
        loguru==0.7.3 requests==2.34.2 certifi charset-normalizer idna urllib3 \\
        scikit-image==0.26.0 lazy-loader==0.6 imageio==2.38.2 tifffile==2026.3.3
    python benchmarks/ternary_peers.py [--only NAME ...]

Writes benchmarks/results/ternary_peers.json and prints markdown tables.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".venv" / "peers"
RESULTS = ROOT / "benchmarks" / "results" / "ternary_peers.json"
sys.path.append(str(PEERS))
sys.path.insert(0, str(Path(__file__).parent))

OURS = {"ternary": ("ternary", {}), "ternary_1step": ("ternary", {"max_count": "1"}),
        "loihi2": ("loihi2", {}), "spikingbrain": ("spikingbrain", {})}
SJ_MODES = ("Max", "99.9%", "99.99%", 0.5, 1 / 3)
SJ_T = (4, 8, 16, 32, 64)
AGREEMENT_GOAL = 0.995


# ---- models and data ----------------------------------------------------------------------------
def _digits_train_module():
    spec = importlib.util.spec_from_file_location("digits_train",
                                                  ROOT / "examples" / "digits" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shipped_digits_module():
    """The bundled digits CNN as a torch module with the ONNX file's own weights (the export
    folded its batch norms into the convolutions)."""
    import onnx
    import torch
    from torch import nn

    module = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))
    weights = {i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy())
               for i in onnx.load(str(ROOT / "examples/digits/model.onnx")).graph.initializer}
    names = {"0": "features.0", "3": "features.4", "7": "classifier.1", "9": "classifier.3"}
    module.load_state_dict({f"{k}.{p}": weights[f"{v}.{p}"] for k, v in names.items()
                            for p in ("weight", "bias")})
    return module.eval()


def digits_deep_module():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(32, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(48 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))


def to_onnx(module, example, path: Path, name: str) -> Path:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(module, (torch.from_numpy(example),), str(path), input_names=[name],
                      output_names=["logits"], dynamo=True, dynamic_shapes=({0: batch},),
                      external_data=False, verbose=False)
    return path


def digits_cases(work: Path) -> list[dict]:
    """The two digits CNNs as torch modules (for SJ) and ONNX (for us), with their data."""
    import torch
    from sbcompile.pipeline import load_model
    from sbcompile.runtime.reference import evaluate

    tr = _digits_train_module()
    x_tr, x_te, y_tr, y_te = tr.load_split()
    shipped = shipped_digits_module()
    torch.manual_seed(1)
    deep = tr.fit(digits_deep_module(), x_tr, y_tr, seed=1, epochs=30)
    cases = []
    for name, module, onnx in (("digits CNN", shipped, ROOT / "examples/digits/model.onnx"),
                               ("digits deep CNN", deep,
                                to_onnx(deep, x_te[:4], work / "digits_deep.onnx", "image"))):
        with torch.no_grad():
            logits = module(torch.from_numpy(x_te)).numpy()
        floats = evaluate(load_model(onnx), {"image": x_te})["logits"]
        cases.append({"name": name, "module": module, "onnx": onnx, "input": "image",
                      "output": "logits",
                      "folds": [(x_tr[:256], x_te)], "labels": y_te, "torch_logits": logits,
                      "calib_torch": x_tr[:256],
                      "torch_vs_onnx_max_abs": float(np.abs(logits - floats).max())})
    return cases


def lfw_inputs(size: int) -> np.ndarray:
    from PIL import Image
    import skimage.data

    faces = skimage.data.lfw_subset()  # [200, 25, 25] in [0, 1]: 100 faces, then 100 non-faces
    crops = np.stack([np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize(
        (size, size), Image.BILINEAR)) for f in faces]).astype(np.float32) / 255.0
    return ((np.repeat(crops[..., None], 3, -1) - 0.5) / 0.5).astype(np.float32)


def mtcnn_cases() -> list[dict]:
    from fetch_models import cache_dir

    cases = []
    for name, file, inp, out, size in (
            ("MTCNN R-Net", "mtcnn_rnet.onnx", "input_2", "softmax_1", 24),
            ("MTCNN O-Net", "mtcnn_onet.onnx", "input_3", "softmax_2", 48)):
        x = lfw_inputs(size)
        cases.append({"name": name, "module": None, "onnx": cache_dir() / file, "input": inp,
                      "output": out,
                      "folds": [(x[0::2], x[1::2]), (x[1::2], x[0::2])], "labels": None})
    return cases


# ---- ours ---------------------------------------------------------------------------------------
def ours(case: dict, preset: str, overrides: dict) -> dict:
    """Agreement, accuracy, T and event counts of one preset, summed over the case's folds."""
    import sbcompile
    from sbcompile.config import make_config
    from sbcompile.passes import analyse
    from sbcompile.ir.records import analysis, spiked_layers

    name = case["input"]
    agree = correct = n = 0
    events = first_events = spikes = hidden_spikes = neurons = hidden_neurons = 0.0
    layers_T, seconds = [], 0.0
    for calib, evaluate in case["folds"]:
        start = time.perf_counter()
        model = sbcompile.compile(case["onnx"], preset=preset, calib={name: calib},
                                  overrides={**overrides, "targets": ""})
        seconds += time.perf_counter() - start
        out = case["output"]  # the face/non-face scores, not the box regression beside them
        spiked = model.run({name: evaluate}).outputs[out]
        floats = model.run({name: evaluate}, use_float=True).outputs[out]
        agree += int(np.sum(spiked.argmax(-1) == floats.argmax(-1)))
        if case["labels"] is not None:
            correct += int(np.sum(spiked.argmax(-1) == case["labels"]))
        n += len(evaluate)
        config = make_config(preset, {**overrides, "targets": ""})
        measured = analysis(analyse.run(model.graph, config, model.artifact.float_graph,
                                        {name: evaluate}))
        rows = measured.layers  # per inference, on the evaluation inputs
        syn = [sum(r["ops"].get(c, 0.0) for c in ("binary_ac", "signed_ac", "shift_add",
                                                 "int8_mac_graded")) for r in rows]
        events += sum(syn) * len(evaluate)
        first_events += syn[0] * len(evaluate)
        counts = [r["ops"]["spike_messages"] * len(evaluate) for r in rows]
        sizes = [int(np.prod(model.graph.values[info.counts].shape[1:])) * len(evaluate)
                 for info in spiked_layers(model.graph).values()]
        spikes, neurons = spikes + sum(counts), neurons + sum(sizes)
        hidden_spikes, hidden_neurons = hidden_spikes + sum(counts[1:]), hidden_neurons + \
            sum(sizes[1:])
        layers_T.append([r["sparsity"].get("T_max") or r["sparsity"]["T"] for r in rows])
    return {"preset": preset, "overrides": overrides, "decisions": n, "agree": agree,
            "agreement": agree / n, "accuracy": correct / n if case["labels"] is not None
            else None, "T_per_layer": layers_T, "T_max": max(max(t) for t in layers_T),
            "spikes_per_neuron": spikes / neurons,
            "hidden_spikes_per_neuron": hidden_spikes / max(hidden_neurons, 1e-30),
            "synaptic_events": events / n, "synaptic_events_after_first": (events - first_events)
            / n, "compile_s": seconds}


# ---- SpikingJelly -------------------------------------------------------------------------------
class EventCounter:
    """Forward hooks on a converted SNN: IF spikes, and per Conv2d / Linear the
    synaptic events of its inputs (nonzero inputs x the outputs they reach), first layer apart."""

    def __init__(self, net) -> None:
        import torch
        from spikingjelly.activation_based import neuron

        self.spikes = 0.0
        self.events = self.first = 0.0
        self.first_layer = None
        for module in net.modules():
            if isinstance(module, neuron.BaseNode):
                module.register_forward_hook(self._spiking)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.register_forward_hook(self._synapses)

    def _spiking(self, module, inputs, output) -> None:
        self.spikes += float(output.detach().ne(0).sum())

    def _synapses(self, module, inputs, output) -> None:
        import torch

        x = inputs[0].detach().ne(0).float()
        if isinstance(module, torch.nn.Linear):
            events = float(x.sum()) * module.out_features
        else:
            ones = torch.ones((1, module.in_channels // module.groups) + module.kernel_size)
            reach = torch.nn.functional.conv2d(
                x if module.groups == 1 else x.reshape(x.shape[0] * module.groups, -1,
                                                       *x.shape[2:]),
                ones, None, module.stride, module.padding, module.dilation)
            events = float(reach.sum()) * (module.out_channels // module.groups)
        if self.first_layer is None:
            self.first_layer = module
        if module is self.first_layer:
            self.first += events
        else:
            self.events += events


def spiking_jelly(case: dict) -> dict:
    import torch
    from spikingjelly.activation_based import ann2snn, functional, neuron

    x = torch.from_numpy(case["folds"][0][1])
    float_pred = case["torch_logits"].argmax(-1)
    loader = [torch.from_numpy(b) for b in np.array_split(case["calib_torch"], 4)]
    rows = []
    for mode in SJ_MODES:
        start = time.perf_counter()
        net = ann2snn.FXConverter(recipe=ann2snn.RateCodingRecipe(dataloader=loader, mode=mode),
                                  device="cpu").convert(copy.deepcopy(case["module"])).eval()
        convert_s = time.perf_counter() - start
        counter = EventCounter(net)
        neurons = 0
        out = None
        functional.reset_net(net)
        with torch.no_grad():
            for t in range(1, max(SJ_T) + 1):
                step = net(x)
                out = step if out is None else out + step
                if t == 1:
                    neurons = sum(m.v.numel() for m in net.modules()
                                  if isinstance(m, neuron.BaseNode) and torch.is_tensor(m.v))
                if t in SJ_T:
                    pred = out.argmax(-1).numpy()
                    rows.append({"mode": str(mode), "T": t,
                                 "agreement": float(np.mean(pred == float_pred)),
                                 "accuracy": float(np.mean(pred == case["labels"])),
                                 "spikes_per_neuron": counter.spikes / max(neurons, 1),
                                 "synaptic_events_after_first": counter.events / len(x),
                                 "first_layer_input_events": counter.first / len(x),
                                 "synaptic_events": (counter.events + counter.first) / len(x),
                                 "convert_s": convert_s})
    best = {}
    for row in rows:
        if row["T"] not in best or (row["agreement"], -row["synaptic_events_after_first"]) > \
                (best[row["T"]]["agreement"], -best[row["T"]]["synaptic_events_after_first"]):
            best[row["T"]] = row
    return {"all": rows, "best_per_T": [best[t] for t in SJ_T]}


def sj_refuses_prelu() -> str:
    """What SpikingJelly's rate-coding recipe does with a PReLU CNN (MTCNN's activation)."""
    import torch
    from torch import nn
    from spikingjelly.activation_based import ann2snn, neuron

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    loader = [torch.randn(4, 3, 6, 6)]
    try:
        snn = ann2snn.FXConverter(recipe=ann2snn.RateCodingRecipe(dataloader=loader, mode="Max"),
                                  device="cpu").convert(net)
    except Exception as e:  # the peer's own refusal, recorded as it says it
        return f"refused: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    spiking = sum(isinstance(m, neuron.BaseNode) for m in snn.modules())
    return f"converted with {spiking} spiking neurons (PReLU left as {sum(isinstance(m, nn.PReLU) for m in snn.modules())} float modules)"


# ---- tables -------------------------------------------------------------------------------------
def goal_rows(result: dict) -> dict:
    """Fewest synaptic events at agreement >= 99.5 %: ours (any preset) vs SJ (any mode, T)."""
    mine = [r for r in result["ours"].values() if r["agreement"] >= AGREEMENT_GOAL]
    peer = [r for r in (result.get("spikingjelly") or {}).get("all", [])
            if r["agreement"] >= AGREEMENT_GOAL]
    pick = lambda rows, key: min(rows, key=lambda r: r[key]) if rows else None  # noqa: E731
    out = {}
    for key in ("synaptic_events_after_first", "synaptic_events"):
        a, b = pick(mine, key), pick(peer, key)
        out[key] = {"ours": a and {"preset": a["preset"], "overrides": a["overrides"],
                                   "events": a[key], "agreement": a["agreement"]},
                    "spikingjelly": b and {"mode": b["mode"], "T": b["T"], "events": b[key],
                                           "agreement": b["agreement"]},
                    "ratio_ours_to_peer": a[key] / b[key] if a and b else None}
    return out


def tables(results: list[dict]) -> str:
    lines = ["| model | converter | T | agreement with float | accuracy | spikes/neuron "
             "(hidden) | synaptic events / inference (after the first layer) |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        for key, r in res["ours"].items():
            acc = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-"
            lines.append(f"| {res['name']} | sbcompile `{key}` | {_t(r['T_per_layer'][0])} | "
                         f"{r['agree']}/{r['decisions']} ({r['agreement']:.1%}) | {acc} | "
                         f"{r['spikes_per_neuron']:.2f} ({r['hidden_spikes_per_neuron']:.2f}) | "
                         f"{r['synaptic_events']:,.0f} ({r['synaptic_events_after_first']:,.0f})"
                         " |")
        sj = res.get("spikingjelly")
        if sj:
            for r in sj["best_per_T"]:
                lines.append(f"| {res['name']} | SpikingJelly ann2snn ({r['mode']}) | {r['T']} | "
                             f"{r['agreement']:.1%} | {r['accuracy']:.2%} | "
                             f"({r['spikes_per_neuron']:.2f}) | {r['synaptic_events']:,.0f} "
                             f"({r['synaptic_events_after_first']:,.0f}) |")
        else:
            lines.append(f"| {res['name']} | SpikingJelly ann2snn | - | {res['peer_note']} "
                         "| | | |")
    return "\n".join(lines)


def _t(per_layer: list[int]) -> str:
    return str(per_layer[0]) if len(set(per_layer)) == 1 else ",".join(map(str, per_layer))


def main() -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="model names (substring match)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="the results file (rows of "
                        "models it already holds and this run does not measure are kept)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as work:
        cases = digits_cases(Path(work)) + mtcnn_cases()
        prelu = sj_refuses_prelu()
        for case in cases:
            if args.only and not any(o.lower() in case["name"].lower() for o in args.only):
                continue
            res = {"name": case["name"], "ours": {},
                   "torch_vs_onnx_max_abs": case.get("torch_vs_onnx_max_abs")}
            for key, (preset, overrides) in OURS.items():
                res["ours"][key] = ours(case, preset, overrides)
                print(case["name"], key, {k: v for k, v in res["ours"][key].items()
                                          if k in ("agreement", "accuracy", "T_per_layer",
                                                   "synaptic_events")}, flush=True)
            if case["module"] is not None:
                res["spikingjelly"] = spiking_jelly(case)
            else:
                res["peer_note"] = f"not run: a PReLU network ({prelu})"
            res["goal"] = goal_rows(res)
            results.append(res)
    import spikingjelly  # noqa: F401  (its version, for the record)
    from importlib.metadata import version

    record = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, "
              f"{platform.processor() or 'cpu'}, Python {platform.python_version()}",
              "spikingjelly": version("spikingjelly"), "sj_prelu": prelu,
              "agreement_goal": AGREEMENT_GOAL, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    if args.json.exists():  # keep the other models' rows
        old = json.loads(args.json.read_text())
        names = {r["name"] for r in results}
        record["results"] = [r for r in old["results"] if r["name"] not in names] + results
    args.json.write_text(json.dumps(record, indent=1, default=str))
    print(tables(record["results"]))
    print(json.dumps([{r["name"]: r["goal"]} for r in record["results"]], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
