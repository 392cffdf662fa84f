"""Compile configuration: the presets of DESIGN.md, typed ``--set KEY=VALUE`` overrides, config
files (``compile --config FILE``) and per-layer settings (``layers``: an ordered mapping from an
fnmatch pattern of a spiked layer's name to overrides of that layer's spiking fields; the first
matching pattern wins; ``layer_settings`` answers for one layer)."""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.codings import CODINGS
from sbcompile.ir.ops import OPS
from sbcompile.target_registry import DEFAULT_TARGETS, PROGRAM_TARGETS
from sbcompile.tune_metrics import COMPARED, check_floor

INT32 = np.iinfo(np.int32)
T_MAX_LIMIT = 127  # calibrated counts stay int8 (a window of at most 127 unary steps)
ENCODER = OPS["spike_encode"]  # the spike encoder's defaults and attribute domains
# the energy presets a report or the tune objective prices with (passes/energy.py's prices)
ENERGY_CONVENTIONS = {
    "spikingbrain": "SpikingBrain-1.0 arithmetic: synaptic events x INT8 add (0.03 pJ) vs dense "
                    "FP16 MAC (1.5 pJ) / INT8 MAC (0.23 pJ), Horowitz 45 nm; ignores memory "
                    "traffic, routing and control",
    "horowitz45": "Horowitz 45 nm: unit-spike ACs as INT32 adds (0.1 pJ), graded spikes as INT8 "
                  "MACs (0.23 pJ), threshold reductions as FP16 adds (0.4 pJ), rescales as FP16 "
                  "mults (1.1 pJ); memory ignored",
    "vision_snn": "Spike-driven Transformer convention: 4.6 pJ x first-layer MACs + 0.9 pJ x "
                  "SOPs of later layers (FP32 45 nm); baseline FP32 MAC 4.6 pJ",
    "loihi2018": "ESTIMATE from Davies et al. 2018 pre-silicon Loihi minima: 23.6 pJ/synaptic "
                 "op, 1.7 pJ/spike, 52 pJ/neuron update; no per-op figure exists for Loihi 2",
}


@dataclass
class CompileConfig:
    preset: str = "spikingbrain"
    spike: bool = True                  # False: keep the float graph (preset float)
    policy: str = "dynamic"             # dynamic (per token, mean|x|/k) | static (calibrated)
    k: float = ENCODER.attrs["k"]       # dynamic threshold divisor
    max_count: int | None = None        # clamp of |count|; None: unbounded (dynamic, SpikingBrain)
                                        # or chosen per layer by calibration (static)
    t_max: int = 8                      # static, max_count None: the largest count (T) it may pick
    t_snr_db: float = 22.0              # ... the fewest steps reconstructing the input to this SNR
    calib_method: str = "mse"           # static thresholds: mse (error-minimising) | percentile
    threshold_granularity: str = "tensor"  # static: one threshold per tensor | per input channel
    percentile: float = 99.99           # for calib_method=percentile: vth = pct(|x|) / max_count
    coding: str = "bitwise_bidirectional"
    t_mode: str = "global"              # expansion length: global | tensor | token
    window: int = 3                     # fixed window for the spike_slot_window figure
    group_size: int | None = 128        # weight quantisation groups along the input axis
    exclude: list[str] = field(default_factory=list)  # fnmatch patterns of layers kept in float
    calib_batch: int = 64               # most samples a calibration/analysis batch holds
                                        # (fewer where their activations pass 32 MB)
    max_memory: str | None = None       # refuse a compile estimated past this ("4G", "512M";
                                        # None: the machine's available memory)
    spike_conv: bool = True             # spike conv inputs too (not only linear projections)
    attention_quantize: bool = False    # spiked attention query, INT8 K/V, integer scores
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))  # programs to store
    triton_density: float | None = None  # expected nonzero count fraction; None: as measured
    count_bound: str = "measured"       # unbounded counts: measured on calibration | worst_case
    count_margin: float = 2.0           # measured bound = margin x largest |count| seen
    sensitivity: bool = False           # analysis: each layer's end-to-end contribution (one
    #                                     more spiked run per layer: keep it float, measure)
    calib_order: str = "float"          # static thresholds from the float activations, or
                                        # sequential: each with the layers before it spiked
    # per-layer overrides: {fnmatch pattern: {LayerSettings field: value}}, first match wins
    layers: dict[str, dict] = field(default_factory=dict)
    # set: search the per-layer settings first (sbcompile.tune) to keep tune_metric >= it
    fidelity_floor: float | None = None
    tune_metric: str = "cosine"         # cosine (end to end, worst output) | agreement (argmax)
    tune_objective: str = "energy"      # least energy | most sparsity (synaptic ops avoided)
    tune_energy: str = "spikingbrain"   # energy preset the energy objective prices with
    tune_seconds: float = 600.0         # search time bound (the best feasible so far is kept)
    # with calibration data: below this worst-output tune_metric (cosine or argmax agreement
    # vs float, on the calibration inputs) compile repairs the settings (sbcompile.tune.repair)
    # within repair_seconds; None: never (`sbcompile compile` sets tune.REPAIR_FLOOR unless told)
    repair_floor: float | None = None
    repair_seconds: float = 300.0

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

    def max_memory_bytes(self) -> int | None:
        """``max_memory`` in bytes: a number with an optional unit K, M, G or T (powers of
        1024; a trailing B or iB is allowed)."""
        if self.max_memory is None:
            return None
        text = str(self.max_memory).strip().upper().removesuffix("IB").removesuffix("B")
        scale = 1024 ** (" KMGT".index(text[-1]) if text and text[-1] in "KMGT" else 0)
        try:
            value = float(text[:-1] if scale > 1 else text) * scale
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and value >= 1):
            raise SbcError(f"max_memory must be a size such as 4G or 512M, not "
                           f"'{self.max_memory}'")
        return int(value)

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
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise SbcError(f"{name} must be one of {', '.join(allowed)}, not '{value}'")
        for name, domain in RANGES.items():
            value = getattr(self, name)
            if value is not None and not domain.holds(value):
                raise SbcError(f"{name} must be {domain}, got {value}")
        if self.policy == "static" and self.max_count is None and self.calib_method == "percentile":
            raise SbcError("calib_method=percentile needs max_count")
        unknown = [t for t in self.targets if t not in PROGRAM_TARGETS]
        if unknown:
            raise SbcError(f"unknown target '{unknown[0]}' in targets (known: "
                           f"{', '.join(PROGRAM_TARGETS)})")
        if self.fidelity_floor is not None:
            check_floor(self.tune_metric, self.fidelity_floor, "fidelity_floor")
        if self.max_memory is not None:
            self.max_memory_bytes()
        _check_layers(self)
        return self


@dataclass(frozen=True)
class LayerSettings:
    """The spiking settings one layer compiles with: the config's fields of the same names,
    overridden by the first ``layers`` pattern matching the layer. ``threshold`` fixes a static
    threshold (no calibration); ``float`` keeps the layer unspiked (as ``exclude`` does).
    A field added here becomes settable per layer; when CompileConfig has a field of the same
    name, that is its default."""

    policy: str
    k: float
    max_count: int | None
    calib_method: str
    percentile: float
    threshold_granularity: str
    t_max: int
    t_snr_db: float
    threshold: float | None = None
    float: bool = False

    def encoder_fields(self) -> dict:
        """What a spike encoder is built from (layers sharing one encoder must agree on it)."""
        d = dataclasses.asdict(self)
        d.pop("float")
        return d


LAYER_KEYS = tuple(f.name for f in dataclasses.fields(LayerSettings))
_GLOBAL_KEYS = tuple(k for k in LAYER_KEYS if k in {f.name for f in dataclasses.fields(
    CompileConfig)})


def matching_pattern(config: CompileConfig, name: str) -> str | None:
    """The first ``layers`` pattern matching layer ``name``, or None."""
    return next((p for p in config.layers if fnmatch.fnmatchcase(name, p)), None)


def layer_settings(config: CompileConfig, name: str) -> LayerSettings:
    """The effective spiking settings of layer ``name``: the first matching ``layers`` entry
    over the config's own fields; a layer ``exclude`` names is float."""
    pattern = matching_pattern(config, name)
    overrides = config.layers[pattern] if pattern is not None else {}
    excluded = any(fnmatch.fnmatchcase(name, p) for p in config.exclude)
    settings = LayerSettings(**{k: getattr(config, k) for k in _GLOBAL_KEYS})
    settings = dataclasses.replace(settings, **overrides)
    return dataclasses.replace(settings, float=True) if excluded else settings


def _check_layers(config: CompileConfig) -> None:
    """Each ``layers`` entry: a pattern string mapping to known keys of the right types, whose
    effective settings pass the same checks as the whole config's."""
    if not isinstance(config.layers, dict):
        raise SbcError("layers must map layer name patterns to settings, got "
                       f"{type(config.layers).__name__}")
    types = {f.name: f.type for f in dataclasses.fields(LayerSettings)}
    for pattern, overrides in config.layers.items():
        where = f"layers['{pattern}']"
        if not isinstance(pattern, str) or not pattern:
            raise SbcError(f"{where}: a pattern must be a non-empty string")
        if not isinstance(overrides, dict):
            raise SbcError(f"{where}: expected an object of settings, got "
                           f"{type(overrides).__name__}")
        for key, value in overrides.items():
            if key not in types:
                raise SbcError(f"{where}: unknown key '{key}' (known: {', '.join(LAYER_KEYS)})")
            if not _has_type(value, types[key]):
                raise SbcError(f"{where}.{key}: expected {types[key]}, got {value!r}")
        globals_ = {k: v for k, v in overrides.items() if k in _GLOBAL_KEYS}
        try:
            dataclasses.replace(config, layers={}, **globals_).check()
        except SbcError as e:
            raise SbcError(f"{where}: {e}") from None
        s = dataclasses.replace(LayerSettings(**{k: getattr(config, k) for k in _GLOBAL_KEYS}),
                                **overrides)
        if s.threshold is not None:
            if not (_finite_float32(s.threshold) and np.float32(s.threshold) > 0):
                raise SbcError(f"{where}.threshold: must be > 0 and finite in float32, got "
                               f"{s.threshold}")
            if s.policy != "static":
                raise SbcError(f"{where}.threshold: a fixed threshold needs policy static "
                               f"(the layer's policy is {s.policy})")


def _has_type(value: Any, type_text: str) -> bool:
    """Whether a JSON value fits a field's annotation (int accepted where float is asked)."""
    if value is None:
        return "None" in type_text
    if isinstance(value, bool):
        return type_text.startswith("bool")
    if type_text.startswith("int"):
        return isinstance(value, int)
    if type_text.startswith("float"):
        return isinstance(value, (int, float))
    if type_text.startswith("str"):
        return isinstance(value, str)
    if type_text.startswith("list"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if type_text.startswith("dict"):
        return isinstance(value, dict)
    return False


def _finite_float32(value: float) -> bool:
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.float32(value)))


@dataclass(frozen=True)
class Range:
    """A number field's domain: above ``low`` (or at it, ``low_in``), at most ``high``. Floats
    are checked as float32 too, as the compiled graph stores them (k = 1e-300 is 0 there)."""

    low: float
    high: float | None = None
    low_in: bool = True

    def holds(self, value: float) -> bool:
        values = [value, np.float32(value)] if isinstance(value, float) else [value]
        return all((v >= self.low if self.low_in else v > self.low) and
                   (self.high is None or v <= self.high) for v in values)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>=' if self.low_in else '>'} {self.low:g}"
        if self.low_in:
            return f"in {self.low:g}..{self.high:g}"
        return f"in ({self.low:g}, {self.high:g}]"


# the domain of every config field that has one: what check() refuses, the artifact schema's
# enums and the CLI's choices (a None value of an optional field is never checked)
CHOICES: dict[str, tuple[str, ...]] = {
    "policy": ENCODER.choices["policy"], "calib_order": ("float", "sequential"),
    "calib_method": ("mse", "percentile"), "threshold_granularity": ("tensor", "channel"),
    "coding": tuple(CODINGS), "t_mode": ("global", "tensor", "token"),
    "count_bound": ("measured", "worst_case"), "tune_metric": COMPARED,
    "tune_objective": ("energy", "sparsity"), "tune_energy": tuple(ENERGY_CONVENTIONS)}
RANGES: dict[str, Range] = {
    "k": Range(0, low_in=False), "max_count": Range(1), "t_max": Range(1, T_MAX_LIMIT),
    "t_snr_db": Range(0, low_in=False), "percentile": Range(0, 100, low_in=False),
    "window": Range(1), "group_size": Range(1), "triton_density": Range(0, 1, low_in=False),
    "count_margin": Range(1), "calib_batch": Range(1), "tune_seconds": Range(0, low_in=False),
    "repair_floor": Range(-1, 1, low_in=False), "repair_seconds": Range(0, low_in=False)}

PRESETS: dict[str, dict[str, Any]] = {
    "float": {"spike": False},
    "spikingbrain": {"policy": "dynamic", "k": ENCODER.attrs["k"], "max_count": None,
                     "coding": "bitwise_bidirectional", "group_size": 128, "t_mode": "global",
                     "attention_quantize": True},
    # SpikingBrain's / ST-BIF's ternary: T steps of {-1, 0, +1}, T <= 8 chosen per layer by
    # calibration; --set max_count=1 is the one-step form
    "ternary": {"policy": "static", "max_count": None, "t_max": 8, "coding": "ternary",
                "group_size": None, "t_mode": "tensor", "calib_order": "sequential"},
    "loihi2": {"policy": "static", "max_count": 127, "coding": "graded", "group_size": None,
               "t_mode": "tensor"},
}
# the name the attention numerics had before spikingbrain took them in (kept for old commands)
PRESETS["spikingbrain_kv8"] = dict(PRESETS["spikingbrain"])


def make_config(preset: str = "spikingbrain", overrides: dict[str, str] | None = None,
                exclude: list[str] | None = None) -> CompileConfig:
    """A preset with ``--set`` style string overrides parsed to each field's type."""
    if preset not in PRESETS:
        raise SbcError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    return apply_overrides(CompileConfig(preset=preset, **PRESETS[preset]), overrides, exclude)


def apply_overrides(cfg: CompileConfig, overrides: dict[str, str] | None = None,
                    exclude: list[str] | None = None) -> CompileConfig:
    """``--set`` style overrides (strings parsed to each field's type) and ``--exclude``
    patterns applied to ``cfg``, checked."""
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
        if type_text.startswith("dict"):
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError(text)
            return value
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


def config_from_file(path: str | Path, preset: str | None = None,
                     overrides: dict[str, str] | None = None,
                     exclude: list[str] | None = None) -> CompileConfig:
    """A config file (JSON: any CompileConfig fields, such as ``tune`` writes or an artifact
    stores) over its preset (``preset`` when given, else the file's, else spikingbrain), then
    ``--set`` overrides and ``--exclude`` patterns over it. Errors name the file and key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SbcError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SbcError(f"{path}: not a JSON config file ({e})") from None
    if not isinstance(data, dict):
        raise SbcError(f"{path}: a config file holds one JSON object of config fields")
    fields = {f.name: f for f in dataclasses.fields(CompileConfig)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise SbcError(f"{path}: unknown config field '{unknown[0]}'")
    wrong = [k for k, v in data.items() if not _has_type(v, fields[k].type)]
    if wrong:
        raise SbcError(f"{path}: {wrong[0]}: expected {fields[wrong[0]].type}, got "
                       f"{data[wrong[0]]!r}")
    try:
        base = preset or data.get("preset", "spikingbrain")
        cfg = make_config(base)
        for key, value in data.items():
            if key != "preset":
                setattr(cfg, key, value)
        cfg.check()
    except SbcError as e:
        raise SbcError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides, exclude)


def parse_set_options(items: list[str]) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings; a malformed item is an error naming it."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SbcError(f"--set '{item}': expected KEY=VALUE")
        result[key.strip()] = value
    return result
