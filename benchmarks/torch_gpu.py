"""The torch target on a GPU against float PyTorch, measured side by side in one process.

Sections (``--only``):
  exact    integer values on the GPU against the reference: the digits CNN (both presets), the
           tiny LM and the 20M stack, with the float ops in float32 (the GPU's default) and in
           float64 (``wide``): the share of counts that differ, and the first encoder where
           they do (why the decoder stacks' counts leave the reference's)
  resnet   a ResNet-50-sized CNN (torchvision's architecture, random weights), batch 32 at
           224x224, presets loihi2 and spikingbrain, against fp32 and bf16 PyTorch (eager and
           CUDA-graphed) and torchao int8 dynamic-activation / int8-weight
  prefill  Llama-style stacks of 20 M and 120 M parameters, prefill 4 x 512 tokens, against
           bf16 (eager and CUDA-graphed) and torchao W8A8
  tiny     the bundled tiny LM generating 32 tokens (batch 1, one full-window forward a token,
           as sbcompile.lm does) against its float model in PyTorch on the same GPU
Every time is the median of CUDA-event-timed repeats after warm-up; the compiled model runs as
``CompiledModel.to_torch("cuda")`` (whole-model CUDA graph per input shape). Writes JSON.

    python benchmarks/torch_gpu.py --out DIR [--only exact resnet prefill tiny]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples" / "spikingbrain_tiny"))

import sbcompile  # noqa: E402
from sbcompile.runtime import reference  # noqa: E402
from sbcompile.runtime.torch.cuda_graphs import CapturedCall  # noqa: E402

TORCH = {"targets": "torch"}
STACKS = {"20M": (384, 12, 6, 2, 1032), "120M": (768, 16, 12, 4, 2304)}


def timed(fn, repeats: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def graphed(fn, inputs: list[torch.Tensor]):
    call = CapturedCall(fn, inputs)
    return lambda: call(inputs)


def torchao_w8a8(model: torch.nn.Module) -> torch.nn.Module:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def share_differing(module, model, feeds) -> dict:
    """Per encoder, the share of counts that differ from the reference's; the first that does."""
    with torch.no_grad():
        outs, ints = module.with_integers(**{k: torch.from_numpy(v).cuda()
                                             for k, v in feeds.items()})
    ref = reference.evaluate(model.graph, feeds, keep=module.integer_names)
    encoders = [n.outputs[0] for n in model.graph.nodes if n.op == "spike_encode"]
    shares = {k: float(np.mean(ints[k].cpu().numpy() != ref[k])) for k in encoders}
    first = next((k for k in encoders if shares[k] > 0), None)
    out = model.graph.outputs[0]
    diff = float(np.abs(outs[0].float().cpu().numpy() - ref[out]).max())
    total = sum(ref[k].size for k in encoders)
    differing = sum(shares[k] * ref[k].size for k in encoders)
    layers_equal = sum(np.array_equal(ints[k].cpu().numpy(), ref[k]) for k in module.integer_names)
    return {"counts_differing": differing / total, "first_differing_encoder": first,
            "first_index": encoders.index(first) if first else None, "encoders": len(encoders),
            "integer_values_equal": f"{layers_equal}/{len(module.integer_names)}",
            "max_output_diff": diff, "max_output": float(np.abs(ref[out]).max())}


def exactness(results: dict) -> None:
    from sbcompile.demo import EXAMPLE
    from sbcompile.npz import load_npz
    from spiking import compile_tiny, data, float_graph

    calib, held = load_npz(EXAMPLE / "calib.npz"), load_npz(EXAMPLE / "heldout.npz")
    rows = {}
    for preset in ("loihi2", "spikingbrain"):
        model = sbcompile.compile(EXAMPLE / "model.onnx", preset=preset, calib=calib,
                                  overrides=TORCH)
        for wide in (False, True):
            module = model.program("torch").module("cuda", wide=wide)
            rows[f"digits {preset} wide={wide}"] = share_differing(
                module, model, {"image": held["image"][:256]})
    art = compile_tiny(float_graph())
    tiny = _with_torch_program(art)
    ids = data("heldout")["input_ids"][:8]
    for wide in (False, True):
        module = tiny.program("torch").module("cuda", wide=wide)
        rows[f"tiny LM wide={wide}"] = share_differing(module, tiny, {"input_ids": ids})
    model, x = stack_model("20M", tokens=256, calib_seqs=2)
    for wide in (False, True):
        module = model.program("torch").module("cuda", wide=wide)
        rows[f"20M stack 1x256 wide={wide}"] = share_differing(module, model,
                                                               {"hidden_states": x[:1]})
    for k, v in rows.items():
        print(f"{k:32s} {v}", flush=True)
    results["exact"] = rows


def _with_torch_program(art):
    from sbcompile.api import CompiledModel
    from sbcompile.config import CompileConfig
    from sbcompile.pipeline import lower_targets

    config = CompileConfig.from_json({**art.config, "targets": ["torch"]})
    programs, _ = lower_targets(art.graph, config)
    art.programs.update(programs)
    return CompiledModel(art)


def stack_model(size: str, tokens: int, calib_seqs: int = 2):
    """A Llama-style stack compiled (preset spikingbrain) from its ONNX export, and inputs."""
    from models import DecoderBlock

    hidden, layers, heads, kv, inter = STACKS[size]
    torch.manual_seed(0)
    stack = torch.nn.Sequential(*[DecoderBlock(hidden, heads, kv, inter, window=16)
                                  for _ in range(layers)]).eval()
    x = torch.randn(2, tokens, hidden)
    model = sbcompile.compile(stack, (x,), calib={"hidden_states": x[:calib_seqs].numpy()},
                              input_names=["hidden_states"], overrides=TORCH)
    model.torch_module = stack
    return model, np.random.default_rng(1).standard_normal((4, tokens, hidden)).astype(
        np.float32)


def resnet(results: dict, batch: int = 32) -> None:
    from torch_models import resnet50

    net = resnet50()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    x = torch.from_numpy(rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)).cuda()
    rows = {}
    fp32 = net.cuda()
    with torch.no_grad():
        rows["fp32 eager"] = timed(lambda: fp32(x))
        bf = resnet50().cuda().to(torch.bfloat16).to(memory_format=torch.channels_last)
        xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        rows["bf16 eager (channels_last)"] = timed(lambda: bf(xb))
        rows["bf16 CUDA graph (channels_last)"] = timed(graphed(bf, [xb]))
        try:
            ao = torchao_w8a8(resnet50().cuda().to(torch.bfloat16).to(
                memory_format=torch.channels_last))
            rows["torchao int8 dyn-act/int8-weight (bf16 convs; only the fc is quantised)"] = \
                timed(graphed(ao, [xb]))
        except Exception as e:  # noqa: BLE001 - report what the library refused
            rows["torchao"] = f"failed: {type(e).__name__}: {e}"[:300]
    for preset in ("loihi2", "spikingbrain"):
        start = time.time()
        model = sbcompile.compile(net.cpu(), (torch.from_numpy(calib),), calib={"x": calib},
                                  preset=preset, input_names=["x"], overrides=TORCH)
        compile_s = time.time() - start
        module = model.to_torch("cuda")
        with torch.no_grad():
            ms = timed(lambda: module(x))
        check = share_differing(module, model, {"x": calib[:1]})
        rows[f"sbcompile {preset}"] = ms
        rows[f"sbcompile {preset} detail"] = {"compile_s": compile_s, **check}
        _profile(module, x, f"resnet_{preset}", results)
    bf16 = rows["bf16 CUDA graph (channels_last)"]
    for preset in ("loihi2", "spikingbrain"):
        rows[f"sbcompile {preset} vs bf16 CUDA graph"] = bf16 / rows[f"sbcompile {preset}"]
    print(json.dumps(rows, indent=1), flush=True)
    results["resnet50_b32"] = rows


def _profile(module, x, label: str, results: dict) -> None:
    """The top kernels of one call (torch.profiler), for where a goal is missed."""
    from torch.profiler import ProfilerActivity, profile

    module.cuda_graphs = False
    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        module(x)
        torch.cuda.synchronize()
    module.cuda_graphs = True
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
    results.setdefault("profiles", {})[label] = table
    print(table, flush=True)


def prefill(results: dict) -> None:
    rows = {}
    for size in STACKS:
        model, x = stack_model(size, tokens=512)
        stack = model.torch_module
        params = sum(p.numel() for p in stack.parameters())
        xs = torch.from_numpy(x).cuda()
        with torch.no_grad():
            bf = stack.cuda().to(torch.bfloat16)
            xb = xs.to(torch.bfloat16)
            row = {"params_M": params / 1e6, "bf16 eager": timed(lambda: bf(xb)),
                   "bf16 CUDA graph": timed(graphed(bf, [xb]))}
            try:
                ao = torchao_w8a8(bf)
                row["torchao W8A8 CUDA graph"] = timed(graphed(ao, [xb]))
            except Exception as e:  # noqa: BLE001
                row["torchao"] = f"failed: {type(e).__name__}: {e}"[:300]
            module = model.to_torch("cuda")
            row["sbcompile spikingbrain"] = timed(lambda: module(xs))
            row["vs bf16 CUDA graph"] = row["bf16 CUDA graph"] / row["sbcompile spikingbrain"]
        _profile(module, xs, f"prefill_{size}", results)
        rows[size] = row
        print(size, json.dumps(row), flush=True)
    results["prefill_4x512"] = rows


def tiny(results: dict, n_tokens: int = 32) -> None:
    from sbcompile.lm import generate
    from spiking import compile_tiny, float_graph
    from weights import load_model

    graph = float_graph()
    model = _with_torch_program(compile_tiny(graph))
    module = model.to_torch("cuda")
    float_model = load_model().cuda().eval()
    prompt = [ord(c) for c in "def main():\n    "]

    def ours(g, feeds):
        with torch.no_grad():
            return {model.output_names[0]: module(torch.from_numpy(feeds["input_ids"]).cuda())
                    .cpu().numpy()}

    def floats(g, feeds):
        with torch.no_grad():
            return {model.output_names[0]: float_model(
                torch.from_numpy(feeds["input_ids"]).cuda()).cpu().numpy()}

    rows = {}
    for label, fn in (("sbcompile torch (CUDA graph)", ours), ("float model, PyTorch fp32",
                                                               floats)):
        generate(fn, graph, prompt, 2)  # warm-up (capture)
        torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = generate(fn, graph, prompt, n_tokens)
        rows[label] = {"tokens_per_s": n_tokens / (time.perf_counter() - start),
                       "text": "".join(map(chr, tokens))}
    print(json.dumps(rows, indent=1), flush=True)
    results["tiny_lm_generate"] = rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", nargs="*", default=["exact", "resnet", "prefill", "tiny"])
    args = parser.parse_args()
    results = {"machine": torch.cuda.get_device_name(), "torch": torch.__version__,
               "date": str(date.today()), "host": platform.node()}
    print(results, flush=True)
    sections = {"exact": exactness, "resnet": resnet, "prefill": prefill, "tiny": tiny}
    for name in args.only:
        start = time.time()
        try:
            sections[name](results)
        except Exception:  # noqa: BLE001 - one failing section must not lose the others
            results[f"{name}_error"] = traceback.format_exc()[-3000:]
            print(results[f"{name}_error"], flush=True)
        print(f"[{name}: {time.time() - start:.0f} s]", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "torch_gpu.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
