"""Compile configuration: the presets of DESIGN.md, typed ``--set KEY=VALUE`` overrides, config
files (``compile --config FILE``) and per-layer settings (``layers``: an ordered mapping from an
fnmatch pattern of a spiked layer's name to overrides of that layer's spiking fields; the first
matching pattern wins; ``layer_settings`` answers for one layer)."""
from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbcompile.errors import SbcError
from sbcompile.ir.codings import CODINGS
from sbcompile.target_registry import DEFAULT_TARGETS, PROGRAM_TARGETS

INT32 = np.iinfo(np.int32)
T_MAX_LIMIT = 127  # calibrated counts stay int8 (a window of at most 127 unary steps)


@dataclass
class CompileConfig:
    preset: str = "spikingbrain"
    spike: bool = True                  # False: keep the float graph (preset float)
    policy: str = "dynamic"             # dynamic (per token, mean|x|/k) | static (calibrated)
    k: float = 3.0                      # dynamic threshold divisor
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
    calib_batch: int = 64               # calibration/analysis batch size (bounds memory)
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
    # with calibration data: below this worst-output cosine (vs float, on the calibration
    # inputs) compile repairs the settings (sbcompile.tune.repair) within repair_seconds; None:
    # never (`sbcompile compile` sets tune.REPAIR_FLOOR unless told otherwise)
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
        if not 1 <= self.t_max <= T_MAX_LIMIT:
            raise SbcError(f"t_max must be in 1..{T_MAX_LIMIT}, got {self.t_max}")
        if not self.t_snr_db > 0:
            raise SbcError(f"t_snr_db must be > 0, got {self.t_snr_db}")
        if self.calib_order not in ("float", "sequential"):
            raise SbcError(f"calib_order must be float or sequential, not '{self.calib_order}'")
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
        unknown = [t for t in self.targets if t not in PROGRAM_TARGETS]
        if unknown:
            raise SbcError(f"unknown target '{unknown[0]}' in targets (known: "
                           f"{', '.join(PROGRAM_TARGETS)})")
        if self.triton_density is not None and not 0 < self.triton_density <= 1:
            raise SbcError(f"triton_density must be in (0, 1], got {self.triton_density}")
        if self.count_bound not in ("measured", "worst_case"):
            raise SbcError("count_bound must be measured or worst_case, not "
                           f"'{self.count_bound}'")
        if not self.count_margin >= 1:
            raise SbcError(f"count_margin must be >= 1, got {self.count_margin}")
        if self.calib_batch < 1:
            raise SbcError(f"calib_batch must be >= 1, got {self.calib_batch}")
        _check_tuning(self)
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


def _check_tuning(config: CompileConfig) -> None:
    from sbcompile.passes.energy import CONVENTIONS
    from sbcompile.tune_metrics import COMPARED, check_floor

    if config.tune_metric not in COMPARED:  # a labelled metric needs `sbcompile tune --labels`
        raise SbcError(f"tune_metric must be one of {', '.join(COMPARED)}, not "
                       f"'{config.tune_metric}'")
    if config.fidelity_floor is not None:
        check_floor(config.tune_metric, config.fidelity_floor, "fidelity_floor")
    if config.tune_objective not in ("energy", "sparsity"):
        raise SbcError(f"tune_objective must be energy or sparsity, not '{config.tune_objective}'")
    if config.tune_energy not in CONVENTIONS:
        raise SbcError(f"tune_energy must be one of {', '.join(CONVENTIONS)}, not "
                       f"'{config.tune_energy}'")
    if not config.tune_seconds > 0:
        raise SbcError(f"tune_seconds must be > 0, got {config.tune_seconds}")
    if config.repair_floor is not None:
        check_floor("cosine", config.repair_floor, "repair_floor")
    if not config.repair_seconds > 0:
        raise SbcError(f"repair_seconds must be > 0, got {config.repair_seconds}")


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


PRESETS: dict[str, dict[str, Any]] = {
    "float": {"spike": False},
    "spikingbrain": {"policy": "dynamic", "k": 3.0, "max_count": None,
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
