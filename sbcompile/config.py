"""Compile configuration: the presets of DESIGN.md and typed ``--set KEY=VALUE`` overrides."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.codings import CODINGS

INT32 = np.iinfo(np.int32)


@dataclass
class CompileConfig:
    preset: str = "spikingbrain"
    spike: bool = True                  # False: keep the float graph (preset float)
    policy: str = "dynamic"             # dynamic (per token, mean|x|/k) | static (calibrated)
    k: float = 3.0                      # dynamic threshold divisor
    max_count: int | None = None        # clamp of |count|; None: unbounded (SpikingBrain)
    calib_method: str = "mse"           # static thresholds: mse (error-minimising) | percentile
    threshold_granularity: str = "tensor"  # static: one threshold per tensor | per input channel
    percentile: float = 99.99           # for calib_method=percentile: vth = pct(|x|) / max_count
    coding: str = "bitwise_bidirectional"
    t_mode: str = "global"              # expansion length: global | tensor | token
    window: int = 3                     # fixed window for the spike_slot_window figure
    group_size: int | None = 128        # weight quantisation groups along the input axis
    exclude: list[str] = field(default_factory=list)  # fnmatch patterns of layers kept in float
    calib_batch: int = 64               # calibration/analysis batch size (bounds memory)
    spike_conv: bool = True             # spike conv inputs too (not only linear projections)
    attention_quantize: bool = False    # spike the attention query, INT8 K/V per token and head
    targets: list[str] = field(default_factory=lambda: ["lava", "triton"])  # programs to store
    triton_density: float | None = None  # expected nonzero count fraction; None: as measured
    count_bound: str = "measured"       # unbounded counts: measured on calibration | worst_case
    count_margin: float = 2.0           # measured bound = margin x largest |count| seen
    sensitivity: bool = False           # analysis: each layer's end-to-end contribution (one
    #                                     more spiked run per layer: keep it float, measure)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "CompileConfig":
        """The config an artifact stores; an unknown field is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SbcError(f"config field '{unknown[0]}' is not known to this sbcompile")
        return cls(**d).check()

    def check(self) -> "CompileConfig":
        """Raise SbcError on an out-of-range or unknown value; return self. Numbers are checked
        as the compiled graph stores them: floats finite and nonzero where they divide in
        float32 (k = 1e-300 is 0 there), integers inside int32."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not _finite_float32(value):
                raise SbcError(f"{f.name} must be finite in float32, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and \
                    not INT32.min <= value <= INT32.max:
                raise SbcError(f"{f.name} must fit int32, got {value}")
        if not np.float32(self.k) > 0:
            raise SbcError(f"k must be > 0 in float32, got {self.k}")
        if self.policy not in ("dynamic", "static"):
            raise SbcError(f"policy must be dynamic or static, not '{self.policy}'")
        if not self.k > 0:
            raise SbcError(f"k must be > 0, got {self.k}")
        if self.max_count is not None and self.max_count < 1:
            raise SbcError(f"max_count must be >= 1, got {self.max_count}")
        if self.policy == "static" and self.max_count is None and self.calib_method == "percentile":
            raise SbcError("calib_method=percentile needs max_count")
        if self.calib_method not in ("mse", "percentile"):
            raise SbcError(f"calib_method must be mse or percentile, not '{self.calib_method}'")
        if self.threshold_granularity not in ("tensor", "channel"):
            raise SbcError("threshold_granularity must be tensor or channel, not "
                           f"'{self.threshold_granularity}'")
        if not 0 < self.percentile <= 100:
            raise SbcError(f"percentile must be in (0, 100], got {self.percentile}")
        if self.coding not in CODINGS:
            raise SbcError(f"coding must be one of {', '.join(CODINGS)}, not '{self.coding}'")
        if self.t_mode not in ("global", "tensor", "token"):
            raise SbcError(f"t_mode must be global, tensor or token, not '{self.t_mode}'")
        if self.window < 1:
            raise SbcError(f"window must be >= 1, got {self.window}")
        if self.group_size is not None and self.group_size < 1:
            raise SbcError(f"group_size must be >= 1, got {self.group_size}")
        unknown = [t for t in self.targets if t not in ("lava", "triton", "onnxruntime")]
        if unknown:
            raise SbcError(f"unknown target '{unknown[0]}' in targets (known: lava, triton, "
                           "onnxruntime)")
        if self.triton_density is not None and not 0 < self.triton_density <= 1:
            raise SbcError(f"triton_density must be in (0, 1], got {self.triton_density}")
        if self.count_bound not in ("measured", "worst_case"):
            raise SbcError("count_bound must be measured or worst_case, not "
                           f"'{self.count_bound}'")
        if not self.count_margin >= 1:
            raise SbcError(f"count_margin must be >= 1, got {self.count_margin}")
        if self.calib_batch < 1:
            raise SbcError(f"calib_batch must be >= 1, got {self.calib_batch}")
        return self


def _finite_float32(value: float) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.float32(value)))


PRESETS: dict[str, dict[str, Any]] = {
    "float": {"spike": False},
    "spikingbrain": {"policy": "dynamic", "k": 3.0, "max_count": None,
                     "coding": "bitwise_bidirectional", "group_size": 128, "t_mode": "global"},
    "ternary": {"policy": "static", "max_count": 1, "coding": "ternary", "group_size": None,
                "t_mode": "tensor"},
    "loihi2": {"policy": "static", "max_count": 127, "coding": "graded", "group_size": None,
               "t_mode": "tensor"},
}
# SpikingBrain's attention numerics too: the query spiked, K/V int8 per token and head
PRESETS["spikingbrain_kv8"] = {**PRESETS["spikingbrain"], "attention_quantize": True}


def make_config(preset: str = "spikingbrain", overrides: dict[str, str] | None = None,
                exclude: list[str] | None = None) -> CompileConfig:
    """A preset with ``--set`` style string overrides parsed to each field's type."""
    if preset not in PRESETS:
        raise SbcError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    cfg = CompileConfig(preset=preset, **PRESETS[preset])
    fields = {f.name: f for f in dataclasses.fields(CompileConfig)}
    for key, raw in (overrides or {}).items():
        if key not in fields or key == "preset":
            raise SbcError(f"unknown --set key '{key}' (known: "
                           f"{', '.join(k for k in fields if k != 'preset')})")
        setattr(cfg, key, _parse(key, raw, getattr(cfg, key), fields[key].type))
    if exclude:
        cfg.exclude = list(cfg.exclude) + list(exclude)
    return cfg.check()


def _parse(key: str, raw: Any, current: Any, type_text: str) -> Any:
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        if "list" in type_text:
            return [p for p in text.split(",") if p]
        if text.lower() in ("none", "null") and "None" in type_text:
            return None
        if type_text.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if type_text.startswith("int"):
            return int(text)
        if type_text.startswith("float"):
            return float(text)
        return text
    except ValueError:
        raise SbcError(f"--set {key}={raw}: not a valid {type_text}") from None


def parse_set_options(items: list[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings; a malformed item is an error naming it."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SbcError(f"--set '{item}': expected KEY=VALUE")
        result[key.strip()] = value
    return result
