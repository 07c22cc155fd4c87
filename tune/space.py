"""Search spaces as data: a YAML file naming the metric, the early-stopping settings and the config keys to search.

    metric: eval/in_support          # a key of the trials' evaluation reports
    mode: max                        # max or min
    constraints: [eval/balance<=0.02]  # a trial breaking one scores metric - penalty (max) / + penalty (min)
    penalty: 1.0
    algorithm: random                # random (Ray Tune's variant generator) or optuna (needs `pip install optuna`)
    budget_s: 300                    # training seconds per trial: ASHA's max_t
    eval_every_s: 30                 # trials report the metric every this many training seconds
    grace_period_s: 60               # ASHA stops no trial before this much training
    reduction_factor: 3              # ASHA keeps the best 1/reduction_factor at each rung
    baseline: true                   # the first trial runs the base config's own values of the params, so the
                                     # summary says whether the search beat it (no grid params then)
    trial:                           # config overrides for trials only (resources, caps); not in the best config
      ray.num_workers: 1
    params:                          # dotted config keys -> one distribution each
      schedule.family: {choice: [cosine, linear, drl]}
      schedule.num_levels: {randint: [3, 8]}          # both ends included
      langevin.c0: {loguniform: [3.0e-4, 3.0e-3]}
      langevin.step_multiplier: {uniform: [0.7, 1.3]}
      train.energy_lr: {grid: [1.0e-3, 2.0e-3]}       # every value, num_samples times

Every error names the file and the key (SearchError).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cdrl.config import Config, ConfigError, config_from_dict, flatten
from pipeline.metric_conditions import EXPECTED, MetricCondition, parse_condition

OBJECTIVE = "tune/objective"  # what ASHA and the searcher rank: the metric, penalised when a constraint breaks
TIME_ATTR = "train_seconds"  # trials' own progress measure (training seconds; monotonic across resumes)
ALGORITHMS = ("random", "optuna")
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
SPACE_KEYS = {"metric", "mode", "constraints", "penalty", "algorithm", "budget_s", "eval_every_s", "grace_period_s",
              "reduction_factor", "baseline", "trial", "params"}


class SearchError(ValueError):
    """A bad search space, search option or resource request; the message names the file or option."""


@dataclass
class SearchSpace:
    path: str
    metric: str
    mode: str
    params: dict[str, dict[str, Any]]
    constraints: list[MetricCondition] = field(default_factory=list)
    penalty: float = 1.0
    algorithm: str = "random"
    budget_s: float = 300.0
    eval_every_s: float = 30.0
    grace_period_s: float = 60.0
    reduction_factor: float = 3.0
    trial: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False

    def baseline_point(self, base: dict[str, Any]) -> dict[str, Any]:
        """The base config's own values of the searched keys: the trial the search has to beat."""
        return {key: get_dotted(base, key) for key in self.params}

    def objective(self, result: dict[str, Any]) -> float:
        """The metric, minus (max) / plus (min) ``penalty`` when a constraint breaks; non-finite = the worst."""
        value = result.get(self.metric)
        worst = -math.inf if self.mode == "max" else math.inf
        if value is None or not math.isfinite(value):
            return worst
        if all(c.holds(result) for c in self.constraints):
            return float(value)
        return float(value) - self.penalty if self.mode == "max" else float(value) + self.penalty

    def param_space(self) -> dict[str, Any]:
        """Ray Tune's param_space: one sampler per dotted key."""
        from ray import tune

        space = {}
        for key, spec in self.params.items():
            (kind, arg), = spec.items()
            if kind == "choice":
                space[key] = tune.choice(arg)
            elif kind == "grid":
                space[key] = tune.grid_search(arg)
            elif kind == "uniform":
                space[key] = tune.uniform(*arg)
            elif kind == "loguniform":
                space[key] = tune.loguniform(*arg)
            else:  # randint, both ends included
                space[key] = tune.randint(arg[0], arg[1] + 1)
        return space


def _fail(path: str, message: str) -> SearchError:
    return SearchError(f"{path}: {message}")


def parse_constraint(path: str, text: Any) -> MetricCondition:
    constraint = parse_condition(text)
    if constraint is None:
        raise _fail(path, f"constraints: cannot read {text!r} (expected {EXPECTED})")
    return constraint


def _number(path: str, key: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)  # PyYAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"{key}: expected a number, got {value!r}")
    return float(value)


def _candidates(path: str, key: str, spec: Any) -> list[Any]:
    """The values to check against the config: every choice, or the two ends of a range."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise _fail(path, f"params.{key}: expected one of {', '.join(DISTRIBUTIONS)} as {{kind: values}}, got {spec!r}")
    (kind, arg), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise _fail(path, f"params.{key}: unknown distribution {kind!r} (known: {', '.join(DISTRIBUTIONS)})")
    if kind in ("choice", "grid"):
        if not isinstance(arg, list) or not arg:
            raise _fail(path, f"params.{key}: {kind} needs a non-empty list of values, got {arg!r}")
        return list(arg)
    if not isinstance(arg, list) or len(arg) != 2:
        raise _fail(path, f"params.{key}: {kind} needs [low, high], got {arg!r}")
    low, high = (_number(path, f"params.{key}", v) for v in arg)
    if kind == "randint":
        if not (low.is_integer() and high.is_integer()):
            raise _fail(path, f"params.{key}: randint needs integer ends, got {arg!r}")
        if low > high:
            raise _fail(path, f"params.{key}: empty range [{arg[0]}, {arg[1]}]")
        spec[kind] = [int(low), int(high)]
        return [int(low), int(high)]
    if not low < high:
        raise _fail(path, f"params.{key}: empty range [{arg[0]}, {arg[1]}] (needs low < high)")
    if kind == "loguniform" and low <= 0:
        raise _fail(path, f"params.{key}: loguniform needs low > 0, got {arg[0]}")
    spec[kind] = [low, high]
    return [low, high]


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def with_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a nested config dict with dotted ``values`` set."""
    tree = copy.deepcopy(base)
    for dotted, value in values.items():
        *sections, name = dotted.split(".")
        node = tree
        for section in sections:
            node = node[section]
        node[name] = value
    return tree


def _check_against_config(path: str, base: dict[str, Any], key: str, values: list[Any]) -> None:
    """Every candidate value must make a valid config (names the key and value otherwise)."""
    for value in values:
        try:
            config_from_dict(with_values(base, {key: value}))
        except ConfigError as err:
            raise _fail(path, f"params.{key}={value!r} makes an invalid config ({err})") from err


def load_space(path: str | Path, base: Config, budget_s: float | None = None) -> SearchSpace:
    """Read and check a space file against the base config; ``budget_s`` overrides the file's."""
    path = str(path)
    if not Path(path).is_file():
        raise SearchError(f"search space not found: {path}")
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise _fail(path, f"not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise _fail(path, "expected a mapping at the top level")
    unknown = sorted(set(raw) - SPACE_KEYS)
    if unknown:
        raise _fail(path, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(SPACE_KEYS))})")
    for required in ("metric", "params"):
        if required not in raw:
            raise _fail(path, f"missing key {required!r}")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise _fail(path, f"mode: must be 'max' or 'min', got {mode!r}")
    algorithm = raw.get("algorithm", "random")
    if algorithm not in ALGORITHMS:
        raise _fail(path, f"algorithm: {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    params, trial = raw["params"], raw.get("trial") or {}
    if not isinstance(params, dict) or not params:
        raise _fail(path, "params: expected a non-empty mapping of dotted config keys")
    if not isinstance(trial, dict):
        raise _fail(path, "trial: expected a mapping of dotted config keys")
    known = set(flatten(base.to_dict()))
    base_dict = base.to_dict()
    for section, keys in (("params", params), ("trial", trial)):
        for key in keys:
            if key not in known:
                near = sorted(k for k in known if k.split(".")[-1] == str(key).split(".")[-1])
                hint = f" (did you mean {', '.join(near)}?)" if near else ""
                raise _fail(path, f"{section}: unknown config key {key!r}{hint}")
    for key, value in trial.items():
        _check_against_config(path, base_dict, key, [value])
    for key, spec in params.items():
        _check_against_config(path, base_dict, key, _candidates(path, key, spec))
    space = SearchSpace(
        path=path, metric=str(raw["metric"]), mode=mode, params=params,
        constraints=[parse_constraint(path, c) for c in raw.get("constraints") or []],
        penalty=_number(path, "penalty", raw.get("penalty", 1.0)), algorithm=algorithm,
        budget_s=_number(path, "budget_s", raw.get("budget_s", 300.0)) if budget_s is None else float(budget_s),
        eval_every_s=_number(path, "eval_every_s", raw.get("eval_every_s", 30.0)),
        grace_period_s=_number(path, "grace_period_s", raw.get("grace_period_s", 60.0)),
        reduction_factor=_number(path, "reduction_factor", raw.get("reduction_factor", 3.0)), trial=trial,
        baseline=raw.get("baseline", False),
    )
    if not isinstance(space.baseline, bool):
        raise _fail(path, f"baseline: must be true or false, got {space.baseline!r}")
    if space.baseline and any("grid" in spec for spec in params.values()):
        raise _fail(path, "baseline: cannot be combined with grid params (a grid already fixes every trial)")
    if space.budget_s <= 0:
        raise _fail(path, f"budget_s: {space.budget_s:g} must be > 0")
    if not 0 < space.eval_every_s <= space.budget_s:
        raise _fail(path, f"eval_every_s: {space.eval_every_s:g} must be in (0, budget_s={space.budget_s:g}]")
    if not 0 < space.grace_period_s <= space.budget_s:
        raise _fail(path, f"grace_period_s: {space.grace_period_s:g} must be in (0, budget_s={space.budget_s:g}]")
    if space.reduction_factor <= 1:
        raise _fail(path, f"reduction_factor: {space.reduction_factor:g} must be > 1")
    return space


def space_summary(space: SearchSpace) -> dict[str, Any]:
    """What the search was asked to do, for the parent MLflow run and the resume check."""
    return {"metric": space.metric, "mode": space.mode, "constraints": [str(c) for c in space.constraints],
            "penalty": space.penalty, "algorithm": space.algorithm, "budget_s": space.budget_s,
            "eval_every_s": space.eval_every_s, "grace_period_s": space.grace_period_s,
            "reduction_factor": space.reduction_factor, "baseline": space.baseline, "trial": space.trial,
            "params": space.params}
