"""The shipped weights: a float32 safetensors state dict with the model config in its metadata."""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, safe_open, save_file

from model import TinyConfig, TinySpikingBrain

WEIGHTS = Path(__file__).resolve().parent / "weights.safetensors"


def save_weights(model: TinySpikingBrain, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(model.cfg.to_json())})


def load_model(path: Path = WEIGHTS) -> TinySpikingBrain:
    """The trained model in eval mode."""
    with safe_open(str(path), framework="pt") as f:
        cfg = TinyConfig(**json.loads(f.metadata()["config"]))
    model = TinySpikingBrain(cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
