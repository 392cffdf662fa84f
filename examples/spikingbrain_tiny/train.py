"""Train the tiny SpikingBrain-style LM on the standard library's docstrings (see data.py).

Writes, beside this file: weights.safetensors (float32 state dict; the config in its metadata),
heldout.npz (``input_ids``/``labels`` [128, context] from held-out modules), calib.npz
(``input_ids`` [16, context] from training modules) and train_log.json (one entry per run that
led to the weights). The shipped weights: float training, 3000 steps of 32 x 64 characters,
    python examples/spikingbrain_tiny/train.py --steps 3000 [--device cuda]
(4.7 min on a GPU, about 0.21 s a step on 2 CPU threads; ``--corpus F`` trains on a corpus saved
by data.py, e.g. under another Python version). ``--init W --spike-k 3`` fine-tunes W with the
spike coding in the loop (spike_aware.py); measured, it did not raise float/spiking agreement.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data import corpus, windows
from model import TinyConfig, TinySpikingBrain
from spike_aware import spiking, step_loss
from weights import load_model, save_weights

HERE = Path(__file__).resolve().parent
EVAL_WINDOWS, CALIB_WINDOWS = 128, 16


def lr_at(step: int, steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def eval_loss(model: TinySpikingBrain, held: dict, device: str, k: float = 0.0) -> float:
    """Held-out loss of the float forward, or of the spiking one when k > 0."""
    with torch.no_grad(), (spiking(model, k) if k > 0 else contextlib.nullcontext()):
        logits = model(torch.from_numpy(held["input_ids"]).to(device))
        labels = torch.from_numpy(held["labels"]).to(device)
        return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--init", type=Path, help="start from these weights")
    parser.add_argument("--spike-k", type=float, default=0.0,
                        help="> 0: spike-aware training with this threshold divisor")
    parser.add_argument("--corpus", type=Path, help="a corpus written by data.py, to train "
                        "under another Python version on the same text")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = TinyConfig()
    if args.corpus:
        with np.load(args.corpus) as f:
            train_ids, held_ids = f["train"], f["heldout"]
    else:
        train_ids, held_ids = corpus()
    held_win = windows(held_ids, cfg.context + 1, EVAL_WINDOWS)
    held = {"input_ids": held_win[:, :-1].copy(), "labels": held_win[:, 1:].copy()}
    calib = {"input_ids": windows(train_ids, cfg.context, CALIB_WINDOWS)}
    model = load_model(args.init).train() if args.init else TinySpikingBrain(cfg)
    model.to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1,
                            betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    train_t = torch.from_numpy(train_ids)
    offsets = torch.arange(cfg.context + 1)
    log, start = [], time.perf_counter()
    for step in range(args.steps):
        starts = torch.from_numpy(rng.integers(0, len(train_ids) - cfg.context - 1, args.batch))
        batch = train_t[starts[:, None] + offsets].to(args.device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        loss = step_loss(model, batch, args.spike_k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            model.eval()
            entry = {"step": step, "train_loss": loss.item(),
                     "eval_loss": eval_loss(model, held, args.device),
                     "eval_loss_spiking": eval_loss(model, held, args.device, args.spike_k or 3.0),
                     "seconds": time.perf_counter() - start}
            model.train()
            log.append(entry)
            print(json.dumps(entry), flush=True)
    model.eval().cpu()
    args.out.mkdir(parents=True, exist_ok=True)
    save_weights(model, args.out / "weights.safetensors")
    np.savez_compressed(args.out / "heldout.npz", **held)
    np.savez_compressed(args.out / "calib.npz", **calib)
    run = {"config": cfg.to_json(), "init": args.init.name if args.init else None,
           "spike_k": args.spike_k, "steps": args.steps, "batch": args.batch, "lr": args.lr,
           "device": args.device, "torch_threads": torch.get_num_threads(),
           "train_tokens": int(len(train_ids)), "heldout_tokens": int(len(held_ids)),
           "log": log}
    log_path = args.out / "train_log.json"
    runs = json.loads(log_path.read_text())["runs"] if args.init and log_path.exists() else []
    log_path.write_text(json.dumps({"runs": runs + [run]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
