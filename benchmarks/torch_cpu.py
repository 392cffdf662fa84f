"""The torch target on the CPU: a ResNet-50-sized CNN (torchvision's architecture, random
weights) evaluating 32 images at 224x224 through ``CompiledModel.to_torch("cpu")`` against
onnxruntime running the float model (the same ONNX export), on the same cores; the integer
values are checked against the reference interpreter (assert_array_equal). Writes
benchmarks/results/torch_cpu.json.

    python benchmarks/torch_cpu.py [--images 32] [--threads 2] [--presets loihi2 spikingbrain]
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sbcompile  # noqa: E402
from sbcompile.runtime import reference  # noqa: E402
from torch_models import resnet50  # noqa: E402


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--presets", nargs="*", default=["loihi2", "spikingbrain"])
    parser.add_argument("--no-check", action="store_true", help="skip the reference check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net = resnet50()
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    images = rng.standard_normal((args.images, 3, 224, 224)).astype(np.float32)
    result = {"machine": platform.processor() or platform.machine(), "date": str(date.today()),
              "threads": args.threads, "images": args.images, "torch": torch.__version__}

    import onnxruntime as ort
    from sbcompile.frontends.torch_frontend import export_module

    proto = export_module(net, (torch.from_numpy(calib),), ["x"], ["logits"], {"x": {0: "batch"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    session.run(None, {"x": images[:2]})
    result["onnxruntime_float_s"] = best_of(lambda: session.run(None, {"x": images}),
                                            args.repeats)
    print("onnxruntime float", result["onnxruntime_float_s"], flush=True)
    for preset in args.presets:
        start = time.perf_counter()
        model = sbcompile.compile(net, (torch.from_numpy(calib),), calib={"x": calib},
                                  preset=preset, input_names=["x"],
                                  overrides={"targets": "torch"})
        row = {"compile_s": time.perf_counter() - start}
        module = model.to_torch("cpu")
        x = torch.from_numpy(images)
        with torch.no_grad():
            module(x[:2])  # first call: kernels load
            row["torch_cpu_s"] = best_of(lambda: module(x), args.repeats)
            if not args.no_check:
                _, integers = module.with_integers(x)
        if not args.no_check:
            start = time.perf_counter()
            ref = reference.evaluate(model.graph, {"x": images}, keep=module.integer_names)
            row["reference_s"] = time.perf_counter() - start
            for name, value in integers.items():
                np.testing.assert_array_equal(value.numpy(), ref[name], err_msg=name)
            row["integer_values_equal"] = f"{len(integers)}/{len(integers)}"
        row["ratio_to_onnxruntime"] = row["torch_cpu_s"] / result["onnxruntime_float_s"]
        result[preset] = row
        print(preset, row, flush=True)
    out = ROOT / "benchmarks" / "results" / "torch_cpu.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
