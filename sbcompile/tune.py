"""Per-layer tuning to a budget: choose each spiked layer's settings (``k`` of a dynamic
threshold; T, i.e. ``max_count``, and the clip of a static one; or float) so that the model keeps
a fidelity floor at the least energy (or the most sparsity), and write them as ``layers``.

The search is greedy with bisection, never exhaustive (its evaluations grow as layers x log of
the ladder, or with many layers as log of both), and measures every step on the calibration
inputs:
1. the untuned preset (a point to compare with), then the start: every layer at its finest rung;
2. sensitivity: with up to PER_LAYER_LIMIT encoders, each layer alone at its cheapest rung, the
   others at the start (fidelity lost, cost saved); with more, each layer's output cosine in the
   untuned preset's analysis (one evaluation for all);
3. when the start misses the floor, the fewest most-sensitive layers go float for it to hold
   (bisection over the ranking; the float model itself missing it: the floor is unreachable);
4. few layers: in order of cost saved per fidelity lost, each layer is bisected down its ladder
   (then, for a static threshold, down its clip ladder) to the cheapest rung that keeps the
   floor, the others as they stand. Many layers: the cheapest rung all can share (bisection),
   then from the cheapest rung up, the longest prefix of the least-sensitive layers that can
   take it (bisection over the prefix length). Each accepted step was measured to keep the
   floor, so the result does.
5. compile's automatic repair (``repair``, with calibration data, when the worst output cosine
   misses ``repair_floor``): the untuned preset; every layer at its finest rung; when that
   misses, the fewest layers named by the introduced-error ranking kept float; then the
   cheapest rung the spiking layers can share.
Costs: energy is the report's spiking estimate under ``energy_preset`` plus the dense float MACs
of the layers kept float; sparsity is 1 - (synaptic ops + float MACs) / dense MACs. Every
evaluated configuration is a point of the fidelity-cost plane; the non-dominated ones form the
Pareto front the report plots. The search stops early at its time bound, keeping the best
settings that held the floor.
"""
from __future__ import annotations

import dataclasses
import glob
import math
import time
from dataclasses import dataclass, field

from sbcompile.config import CompileConfig, LayerSettings, layer_settings
from sbcompile.errors import SbcError
from sbcompile.ir.graph import Graph
from sbcompile.ir.records import analysis
from sbcompile.passes import analyse, calibrate
from sbcompile.passes.energy import dense_mac_price, energy_table, synaptic_ops
from sbcompile.passes.spike_quantize import static_threshold
from sbcompile.passes.targets import spike_groups
from sbcompile.passmanager import spiking_graph
from sbcompile.runtime.reference import evaluate
from sbcompile.tune_metrics import LabelledMetric, check_floor, compared_value

# cheapest (coarsest) first; even the finest spiking rung costs a fraction of a float layer
DYNAMIC_K = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
STATIC_T = (1, 3, 7, 15, 31, 63, 127)                        # graded and bit-serial codings
UNARY_T = (1, 2, 3, 4, 6, 8)                                 # codings that spend a step a unit
UNARY_CODINGS = ("binary", "ternary")
CLIP_SCALE = (3.0, 2.0, 1.5, 1.25, 1.0)  # static threshold x the mse-optimal one, cheapest first
FLOAT = {"float": True}
PER_LAYER_LIMIT = 12  # more knobs than this: ranking from one analysis, descent by prefixes


@dataclass
class Knob:
    """One spike encoder's settings: the layers reading it, its rungs (cheapest first; the last
    is float), and for a static threshold the clip scales of its current T."""

    layers: list[str]
    value: str
    rungs: list[dict]
    rung: int
    clip: int | None = None  # index into CLIP_SCALE (static thresholds at tensor granularity)

    @property
    def name(self) -> str:
        return self.layers[0]


@dataclass
class Trial:
    """One evaluated configuration."""

    layers: dict
    metric: float
    energy_pJ: float
    sparsity: float
    cost: float
    feasible: bool
    note: str
    layer_cosine: dict = field(default_factory=dict)  # per spiked layer, output vs float
    layer_introduced: dict = field(default_factory=dict)  # per layer, the error it adds itself


@dataclass
class Search:
    """The search's outcome: the chosen config and what was measured on the way."""

    config: CompileConfig
    metric: str
    floor: float
    objective: str
    energy_preset: str
    chosen: Trial
    untuned: Trial
    float_metric: float
    trials: list[Trial]
    seconds: float
    stopped_early: bool = False
    ranking: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """The report's ``tune`` entry (JSON)."""
        def point(t: Trial) -> dict:
            return {"metric": t.metric, "energy_pJ": t.energy_pJ, "sparsity": t.sparsity,
                    "feasible": t.feasible, "note": t.note}
        return {"metric": self.metric, "floor": self.floor, "objective": self.objective,
                "energy_preset": self.energy_preset, "seconds": self.seconds,
                "evaluations": len(self.trials), "stopped_early": self.stopped_early,
                "float_metric": self.float_metric, "chosen": point(self.chosen),
                "untuned": point(self.untuned), "layers": self.chosen.layers,
                "sensitivity": self.ranking,
                "points": [point(t) for t in self.trials],
                "front": [point(t) for t in pareto_front(self.trials)]}


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """The trials no other beats on both fidelity (higher) and cost (lower), by cost."""
    front, best = [], -math.inf
    for t in sorted(trials, key=lambda t: (t.cost, -t.metric)):
        if t.metric > best:
            front.append(t)
            best = t.metric
    return front


class Evaluator:
    """Compiles and measures one set of per-layer entries on the calibration inputs (the
    passes of ``passmanager.spiking_graph`` and the analysis; thresholds from statistics gathered
    once)."""

    def __init__(self, graph: Graph, base: CompileConfig, calib, metric: str,
                 labelled: LabelledMetric | None, objective: str, energy_preset: str) -> None:
        self.graph, self.calib = graph, calib
        self.base = dataclasses.replace(base, layers={}, targets=[], fidelity_floor=None,
                                        sensitivity=False)
        self.metric, self.labelled = metric, labelled
        self.objective, self.energy_preset = objective, energy_preset
        groups = spike_groups(graph, self.base)
        self.calibrated = graph
        if any(g.needs_statistics for g in groups):
            self.calibrated = calibrate.run(graph, self.base, calib)
        self.dense_macs: dict[str, float] = {}  # per layer, from the first evaluation
        self.float_metric = 1.0
        # the float graph's layer outputs per batch, evaluated once for every candidate
        keep = [n.outputs[0] for g in groups for n in g.layers]
        self.float_envs = [evaluate(graph, batch, keep=keep)
                           for batch in calib.batches(self.base.calib_batch)]

    def __call__(self, layers: dict, note: str, floor: float, introduced: bool = False
                 ) -> Trial:
        """``introduced``: also each layer's introduced error (the propagation analysis)."""
        cfg = dataclasses.replace(self.base, layers=layers)
        g = spiking_graph(self.calibrated, cfg, self.calib, measure_bounds=False)
        if self.labelled is not None:
            self.labelled.reset()
        g = analyse.run(g, cfg, self.graph, self.calib,  # a trial reads end-to-end figures
                        observe=self.labelled.observe if self.labelled else None,
                        float_envs=None if introduced else self.float_envs,  # inputs too
                        propagation=introduced)
        record = analysis(g)
        for rep in record.layers:
            self.dense_macs.setdefault(rep["name"], rep["ops"]["dense_macs"])
        if self.labelled is not None:
            value = self.labelled.result()
            self.float_metric = self.labelled.result("float")
        else:
            value = compared_value(self.metric, record.outputs_fidelity)
        spiked = {rep["name"] for rep in record.layers}
        float_macs = sum(m for name, m in self.dense_macs.items() if name not in spiked)
        first = record.layers[0]["ops"] if record.layers else None
        energy = (energy_table(record.totals["ops"], first)[self.energy_preset]["spiking_pJ"]
                  + float_macs * dense_mac_price(self.energy_preset))
        all_macs = sum(self.dense_macs.values())
        sparsity = 1 - (synaptic_ops(record.totals["ops"]) + float_macs) / all_macs \
            if all_macs else 0.0
        cost = energy if self.objective == "energy" else 1 - sparsity
        cosines = {rep["name"]: rep["fidelity"]["output"]["cosine"] for rep in record.layers}
        own = {rep["name"]: rep["fidelity"]["introduced"]["cosine"] for rep in record.layers
               if "introduced" in rep["fidelity"]}
        return Trial(dict(layers), value, energy, sparsity, cost, value >= floor, note, cosines,
                     own)


def build_knobs(graph: Graph, base: CompileConfig) -> list[Knob]:
    """One knob per spike encoder of ``base`` (user-excluded layers stay float, unknobbed)."""
    knobs = []
    cfg = dataclasses.replace(base, layers={})
    for group in spike_groups(graph, cfg):
        names = [n.name for n in group.layers]
        if group.settings.policy == "dynamic":
            rungs = [{"policy": "dynamic", "k": k} for k in DYNAMIC_K]
            clip = None
        else:
            ladder = UNARY_T if base.coding in UNARY_CODINGS else STATIC_T
            rungs = [{"policy": "static", "max_count": t} for t in ladder]
            tensor = group.settings.threshold_granularity == "tensor"
            clip = len(CLIP_SCALE) - 1 if tensor else None
        knobs.append(Knob(names, group.value, rungs + [FLOAT], len(rungs) - 1, clip))
    return knobs


class Tuner:
    """The search of the module docstring over ``knobs``."""

    def __init__(self, evaluator: Evaluator, knobs: list[Knob], floor: float, seconds: float,
                 progress=None) -> None:
        self.evaluate, self.knobs, self.floor = evaluator, knobs, floor
        self.deadline = time.monotonic() + seconds
        self.trials: list[Trial] = []
        self.progress = progress
        self.stopped_early = False

    # -- the entries of a state ------------------------------------------------------------
    def entry(self, knob: Knob, rung: int | None = None, clip: int | None = None) -> dict:
        rung = knob.rung if rung is None else rung
        settings = dict(knob.rungs[rung])
        clip = knob.clip if clip is None else clip
        if "max_count" in settings and clip is not None and CLIP_SCALE[clip] != 1.0:
            vth, _ = static_threshold(self.evaluate.calibrated, knob.value,
                                      self._layer_settings(knob, settings))
            settings["threshold"] = float(vth) * CLIP_SCALE[clip]
        return settings

    def _layer_settings(self, knob: Knob, settings: dict) -> LayerSettings:
        cfg = dataclasses.replace(self.evaluate.base, layers={glob.escape(knob.name): settings})
        return layer_settings(cfg, knob.name)

    def layers(self, moves: dict | None = None) -> dict:
        """The ``layers`` entries of the current state, with ``moves`` ({id(knob): {axis:
        index}}) applied."""
        out = {}
        for knob in self.knobs:
            settings = self.entry(knob, **(moves or {}).get(id(knob), {}))
            for name in knob.layers:
                out[glob.escape(name)] = settings
        return out

    def run_trial(self, layers: dict, note: str, introduced: bool = False) -> Trial:
        trial = self.evaluate(layers, note, self.floor, introduced)
        self.trials.append(trial)
        if self.progress is not None:
            self.progress(trial, len(self.trials))
        return trial

    def out_of_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.stopped_early = True
        return self.stopped_early

    # -- the search --------------------------------------------------------------------------
    def search(self) -> tuple[Trial, Trial, list[dict]]:
        """(the chosen trial, the untuned preset's, the sensitivity ranking)."""
        many = len(self.knobs) > PER_LAYER_LIMIT  # ranked by the untuned introduced errors
        untuned = self.run_trial({}, "untuned preset", introduced=many)
        if self.evaluate.float_metric < self.floor:
            # the floor asks more than the float model gives
            raise unreachable(self.floor, self.evaluate.metric, untuned.metric,
                              self.evaluate.float_metric)
        start = self.run_trial(self.layers(), "start: every layer at its finest rung")
        ranking = self._rank(start, untuned)
        current = self._float_until_feasible(start, ranking)
        if len(self.knobs) > PER_LAYER_LIMIT:
            current = self._uniform(current)
        if len(self.knobs) <= PER_LAYER_LIMIT:
            for r in sorted(ranking, key=lambda r: -r["cost_saved"] / max(r["metric_lost"],
                                                                          1e-9)):
                knob = r["knob"]
                current = self._bisect(knob, "rung", current)
                if self._clips(knob):
                    current = self._bisect(knob, "clip", current)
        else:
            order = [r["knob"] for r in sorted(ranking, key=lambda r: r["metric_lost"])]
            current = self._descend(order, "rung", current)
            current = self._descend([k for k in order if self._clips(k)], "clip", current)
        return current, untuned, [{k: v for k, v in r.items() if k != "knob"} for r in ranking]

    def repair(self) -> tuple[Trial, Trial, list[dict]]:
        """compile's automatic repair: the untuned preset, when it misses the floor every layer
        at its finest rung, when that misses too the fewest layers the introduced-error ranking
        names kept float (bisection); then the cheapest rung all spiking layers can share."""
        untuned = self.run_trial({}, "untuned preset", introduced=True)
        if untuned.feasible:
            return untuned, untuned, []
        ranking = self._introduced_ranking(untuned)
        current = self.run_trial(self.layers(), "every layer at its finest rung")
        current = self._float_until_feasible(current, ranking)
        if not self.out_of_time():
            current = self._uniform(current)
        return current, untuned, [{k: v for k, v in r.items() if k != "knob"} for r in ranking]

    def _introduced_ranking(self, untuned: Trial) -> list[dict]:
        """Each knob's error of its own (1 - the introduced cosine of its worst layer) in the
        untuned preset: what it adds on the inputs it receives, not what it inherits."""
        return [{"layer": k.name, "knob": k, "cost_saved": None, "measured": "introduced cosine",
                 "metric_lost": 1 - min(untuned.layer_introduced.get(
                     n, untuned.layer_cosine.get(n, 1.0)) for n in k.layers)}
                for k in self.knobs]

    def _clips(self, knob: Knob) -> bool:
        return knob.clip is not None and "max_count" in knob.rungs[knob.rung]

    def _rank(self, start: Trial, untuned: Trial) -> list[dict]:
        """Each knob's sensitivity: with few knobs, probed (alone at its cheapest rung: the
        fidelity lost and the cost saved); with many, read from the untuned preset's analysis
        (the error each layer introduces on the inputs it receives), one evaluation for all."""
        if len(self.knobs) > PER_LAYER_LIMIT:
            return self._introduced_ranking(untuned)
        ranking = []
        for knob in self.knobs:
            if self.out_of_time():
                break
            probe = self.run_trial(self.layers({id(knob): {"rung": 0}}), f"probe {knob.name}")
            ranking.append({"layer": knob.name, "metric_lost": max(start.metric - probe.metric,
                                                                   0.0),
                            "cost_saved": start.cost - probe.cost,
                            "measured": "probe at the cheapest rung", "knob": knob})
        return ranking

    def _float_until_feasible(self, start: Trial, ranking: list[dict]) -> Trial:
        """The fewest most-sensitive knobs made float for the floor to hold (bisection over
        the ranking; every knob float is the float model, which holds it)."""
        if start.feasible:
            return start
        order = [r["knob"] for r in sorted(ranking, key=lambda r: -r["metric_lost"])]
        ranked = {id(k) for k in order}
        order += [k for k in self.knobs if id(k) not in ranked]  # unranked: out of time
        lo, hi, best = 1, len(order), None
        while lo < hi and not self.out_of_time():
            mid = (lo + hi) // 2
            trial = self.run_trial(self._floated(order[:mid]), f"float {mid} layers")
            if trial.feasible:
                hi, best = mid, trial
            else:
                lo = mid + 1
        if best is None:  # none measured to hold: every knob float
            hi = len(order)
            best = self.run_trial(self._floated(order), "every layer float")
            if not best.feasible:
                raise unreachable(self.floor, self.evaluate.metric,
                                  max(t.metric for t in self.trials), self.evaluate.float_metric)
        for knob in order[:hi]:
            knob.rung = len(knob.rungs) - 1
        return best

    def _uniform(self, current: Trial) -> Trial:
        """Many knobs: the cheapest rung that every knob still spiking can take at once and
        keep the floor (bisection over the ladder), where the descent by prefixes starts."""
        spiking = [k for k in self.knobs if "float" not in k.rungs[k.rung]]
        lo, hi = 0, min((k.rung for k in spiking), default=0)
        while lo < hi and not self.out_of_time():
            mid = (lo + hi) // 2
            trial = self.run_trial(self.layers({id(k): {"rung": mid} for k in spiking}),
                                   f"every spiking layer at rung {mid}")
            if trial.feasible and trial.cost <= current.cost:
                hi, current = mid, trial
            else:
                lo = mid + 1
        for knob in spiking:
            knob.rung = min(knob.rung, hi)
        return current

    def _floated(self, knobs: list[Knob]) -> dict:
        return self.layers({id(k): {"rung": len(k.rungs) - 1} for k in knobs})

    def _bisect(self, knob: Knob, axis: str, current: Trial) -> Trial:
        """The cheapest index of ``axis`` (rung or clip) at or below the knob's current one that
        keeps the floor, the others as they stand (assumes cost falls and fidelity falls down
        the ladder; only measured-feasible indices are taken)."""
        lo, hi = 0, getattr(knob, axis)
        while lo < hi and not self.out_of_time():
            mid = (lo + hi) // 2
            trial = self.run_trial(self.layers({id(knob): {axis: mid}}),
                                   f"{knob.name} {axis} {mid}")
            if trial.feasible and trial.cost <= current.cost:
                hi, current = mid, trial
            else:
                lo = mid + 1
        setattr(knob, axis, hi)
        return current

    def _descend(self, order: list[Knob], axis: str, current: Trial) -> Trial:
        """Many knobs: from the cheapest index of ``axis`` up, the longest prefix of the
        least-sensitive knobs still finer than it that can take it and keep the floor
        (bisection over the prefix length); those stay there, the rest go on to the next."""
        top = max((getattr(k, axis) for k in order), default=0)
        for level in range(top):
            movable = [k for k in order if getattr(k, axis) > level]
            lo, hi = 0, len(movable)
            while lo < hi and not self.out_of_time():
                mid = (lo + hi + 1) // 2
                trial = self.run_trial(self.layers({id(k): {axis: level} for k in movable[:mid]}),
                                       f"{mid} layers to {axis} {level}")
                if trial.feasible and trial.cost <= current.cost:
                    lo, current = mid, trial
                else:
                    hi = mid - 1
            for knob in movable[:lo]:
                setattr(knob, axis, level)
        return current


def expected_evaluations(knobs: list[Knob]) -> int:
    """Start, the ranking, the bisections, the untuned preset (floats extra)."""
    clipped = [k for k in knobs if k.clip is not None]
    if len(knobs) > PER_LAYER_LIMIT:  # the uniform rung, then prefixes below it (about half)
        top = max(k.rung for k in knobs)
        per_level = math.ceil(math.log2(len(knobs) + 1))
        levels = top // 2 + (len(CLIP_SCALE) - 1 if clipped else 0)
        return 2 + math.ceil(math.log2(top + 1)) + levels * per_level
    steps = sum(math.ceil(math.log2(k.rung + 1)) for k in knobs)
    steps += math.ceil(math.log2(len(CLIP_SCALE))) * len(clipped)
    return 2 + len(knobs) + steps


def unreachable(floor: float, metric: str, best: float, float_metric: float) -> SbcError:
    return SbcError(f"fidelity floor {floor:g} ({metric}) is unreachable: the best reached is "
                    f"{best:.4f} (the float model itself: {float_metric:.4f})")


def tune(graph: Graph, base: CompileConfig, calib, metric: str, floor: float,
         objective: str = "energy", energy_preset: str = "spikingbrain",
         labels: dict | None = None, blank: int = 0, seconds: float = 600.0,
         progress=None) -> Search:
    """Search per-layer settings of ``base`` on ``calib`` (see the module docstring). ``labels``
    (output name -> integer labels) for the labelled metrics; ``progress(trial, n)`` sees every
    evaluation. Raises SbcError when the floor is out of range or unreachable."""
    check_floor(metric, floor, "the fidelity floor")
    if not base.spike:
        raise SbcError(f"preset '{base.preset}' does not spike: nothing to tune")
    if calib is None:
        raise SbcError("tuning needs calibration data (--calib X.npz)")
    calib = calibrate.check_calibration(graph, calib)
    labelled = None
    if metric in ("accuracy", "ctc"):
        if not labels:
            raise SbcError(f"tune metric {metric} needs a labels file (--labels Y.npz)")
        labelled = LabelledMetric(metric, labels, calib.samples, blank)
    began = time.monotonic()
    evaluator = Evaluator(graph, base, calib, metric, labelled, objective, energy_preset)
    knobs = build_knobs(graph, base)
    if not knobs:
        raise SbcError("no layer of the model is spiked under this config: nothing to tune")
    if hasattr(progress, "begin"):
        progress.begin(expected_evaluations(knobs))
    tuner = Tuner(evaluator, knobs, floor, seconds, progress)
    chosen, untuned, ranking = tuner.search()
    config = dataclasses.replace(base, layers=chosen.layers, fidelity_floor=None)
    return Search(config.check(), metric, floor, objective, energy_preset, chosen, untuned,
                  evaluator.float_metric, tuner.trials, time.monotonic() - began,
                  tuner.stopped_early, ranking)


REPAIR_FLOOR = 0.99  # `sbcompile compile`'s default repair floor (worst output cosine)
# fields a user may set and still get the default repair: they do not choose the spiking
NEUTRAL_FIELDS = {"targets", "calib_batch", "repair_seconds", "tune_energy", "tune_objective",
                  "sensitivity", "triton_density", "count_margin"}


def default_repair(config: CompileConfig, overrides: dict, chosen: bool) -> CompileConfig:
    """``config`` with the default repair floor, unless its settings were chosen (``chosen``: a
    config file or excluded layers; or an override of a field that shapes the spiking)."""
    if chosen or config.repair_floor is not None or not config.spike or \
            set(overrides) - NEUTRAL_FIELDS:
        return config
    return dataclasses.replace(config, repair_floor=REPAIR_FLOOR)


def worst_cosine(graph: Graph) -> float:
    """The worst output cosine of an analysed graph (1.0 when none was measured)."""
    fidelity = analysis(graph).outputs_fidelity or {}
    return min((f["cosine"] for f in fidelity.values() if "cosine" in f), default=1.0)


def repair(graph: Graph, config: CompileConfig, calib, compiled: Graph) -> Search | None:
    """compile's automatic repair: None when ``compiled`` (the analysed spiking graph) holds
    ``config.repair_floor`` in ``config.tune_metric`` (the worst output's cosine by default, or
    its argmax agreement) on the calibration inputs; else the search of ``Tuner.repair`` within
    ``config.repair_seconds``, its settings in ``config.layers``. A floor the float model itself
    misses is left alone (None)."""
    from sbcompile.progress import quiet

    floor, metric = config.repair_floor, config.tune_metric
    if floor is None or not config.spike or config.layers:
        return None  # off, or settings the user chose per layer
    try:
        if compared_value(metric, analysis(compiled).outputs_fidelity or {}) >= floor:
            return None
    except SbcError:  # agreement on a model without a class axis: nothing to hold
        return None
    began = time.monotonic()
    calib = calibrate.check_calibration(graph, calib)
    with quiet():
        evaluator = Evaluator(graph, config, calib, metric, None, config.tune_objective,
                              config.tune_energy)
        knobs = build_knobs(graph, config)
        if not knobs:
            return None
        tuner = Tuner(evaluator, knobs, floor, config.repair_seconds, None)
        try:
            chosen, untuned, ranking = tuner.repair()
        except SbcError:  # unreachable: the float model misses the floor too
            return None
    if chosen is untuned:
        return None
    chosen_config = dataclasses.replace(config, layers={**config.layers, **chosen.layers},
                                        repair_floor=None)
    return Search(chosen_config.check(), metric, floor, config.tune_objective,
                  config.tune_energy, chosen, untuned, evaluator.float_metric, tuner.trials,
                  time.monotonic() - began, tuner.stopped_early, ranking)


def tune_for_compile(graph: Graph, config: CompileConfig, calib) -> Search:
    """``compile --set fidelity_floor=F``: the same search, from the config's tune fields."""
    from sbcompile.progress import quiet

    with quiet():
        return tune(graph, config, calib, config.tune_metric, config.fidelity_floor,
                    config.tune_objective, config.tune_energy, seconds=config.tune_seconds)
