"""Search spaces, objectives, trial configs and bad input of tune/search.py (no Ray cluster needed)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdrl.config import load_config
from tests.conftest import TINY_TOY
from tune.search import best_config_yaml, check_resources, trial_resources
from tune.space import OBJECTIVE, SearchError, load_space
from tune.trial import trial_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "pipeline" / "configs"
SPACES = REPO / "tune" / "spaces"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("config", "space"), [("toy.yaml", "toy.yaml"), ("digits.yaml", "digits.yaml")])
def test_shipped_spaces_load_and_sample(config, space):
    from ray.tune.search.sample import Domain

    loaded = load_space(SPACES / space, load_config(CONFIGS / config))
    assert {"schedule.family", "schedule.num_levels", "schedule.logsnr_min", "schedule.logsnr_max", "langevin.c0",
            "langevin.step_multiplier", "langevin.num_steps", "train.energy_lr", "train.initializer_lr"} <= set(loaded.params)
    samplers = loaded.param_space()
    assert all(isinstance(s, Domain) for s in samplers.values())
    assert samplers["schedule.family"].categories == ["cosine", "linear", "drl"]
    low, high = loaded.params["schedule.num_levels"]["randint"]
    assert (samplers["schedule.num_levels"].lower, samplers["schedule.num_levels"].upper) == (low, high + 1)  # inclusive
    assert 0 < loaded.eval_every_s <= loaded.budget_s and loaded.trial["ray.num_workers"] == 1


def test_objective_applies_constraints_and_ranks_failures_last(tmp_path):
    space = load_space(SPACES / "toy.yaml", load_config(CONFIGS / "toy.yaml"))
    assert space.objective({"eval/in_support": 0.93, "eval/balance": 0.01}) == pytest.approx(0.93)
    assert space.objective({"eval/in_support": 0.93, "eval/balance": 0.05}) == pytest.approx(-0.07)
    assert space.objective({"eval/in_support": 0.93}) == pytest.approx(-0.07)  # a constraint's metric missing
    assert space.objective({"eval/in_support": float("nan"), "eval/balance": 0.0}) == -math.inf
    minimise = load_space(write(tmp_path, "metric: fid\nmode: min\nconstraints: [nan<=0]\npenalty: 100\n"
                                           "params: {langevin.c0: {uniform: [1, 2]}}\n"),
                          load_config(None))
    assert minimise.objective({"fid": 12.0, "nan": 0.0}) == 12.0 and minimise.objective({"fid": 12.0, "nan": 1.0}) == 112.0
    assert minimise.objective({"fid": float("inf")}) == math.inf
    assert OBJECTIVE == "tune/objective"


@pytest.mark.parametrize(("text", "match"), [
    ("metric: m\nbogus: 1\nparams: {langevin.c0: {uniform: [1, 2]}}\n", "unknown key 'bogus'"),
    ("metric: m\nparams: {langevin.c00: {uniform: [1, 2]}}\n", "params: unknown config key 'langevin.c00'"),
    ("metric: m\ntrial: {ray.workers: 1}\nparams: {langevin.c0: {uniform: [1, 2]}}\n", "trial: unknown config key 'ray.workers'"),
    ("metric: m\nparams: {langevin.c0: {uniform: [2, 1]}}\n", r"params.langevin.c0: empty range \[2, 1\]"),
    ("metric: m\nparams: {langevin.num_steps: {randint: [5, 3]}}\n", "params.langevin.num_steps: empty range"),
    ("metric: m\nparams: {schedule.family: {choice: []}}\n", "params.schedule.family: choice needs a non-empty list"),
    ("metric: m\nparams: {langevin.c0: {loguniform: [0, 1]}}\n", "loguniform needs low > 0"),
    ("metric: m\nparams: {langevin.c0: {normal: [0, 1]}}\n", "unknown distribution 'normal'"),
    ("metric: m\nparams: {schedule.family: {choice: [cosine, quadratic]}}\n", "params.schedule.family='quadratic'"),
    ("metric: m\nparams: {langevin.c0: {uniform: [-1, 1]}}\n", "params.langevin.c0=-1.0 makes an invalid config"),
    ("metric: m\nbudget_s: 10\neval_every_s: 20\nparams: {langevin.c0: {uniform: [1, 2]}}\n", "eval_every_s"),
    ("metric: m\nmode: maximum\nparams: {langevin.c0: {uniform: [1, 2]}}\n", "mode"),
    ("params: {langevin.c0: {uniform: [1, 2]}}\n", "missing key 'metric'"),
    ("metric: m\nalgorithm: bayes\nparams: {langevin.c0: {uniform: [1, 2]}}\n", "algorithm"),
    ("metric: m\nbaseline: yes please\nparams: {langevin.c0: {uniform: [1, 2]}}\n", "baseline: must be true or false"),
    ("metric: m\nbaseline: true\nparams: {langevin.c0: {grid: [1, 2]}}\n", "baseline: cannot be combined with grid"),
])
def test_bad_spaces_name_the_file_and_key(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(SearchError, match=match) as err:
        load_space(path, load_config(None))
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("overrides", "have", "concurrent", "match"), [
    (["ray.use_gpu=true", "ray.num_workers=1"], {"CPU": 2, "GPU": 0}, 1, "needs 1 GPU"),
    (["ray.num_workers=2", "ray.cpus_per_worker=1"], {"CPU": 2, "GPU": 0}, 1, "needs 2.1 CPU"),
    (["ray.num_workers=1", "ray.cpus_per_worker=0.5"], {"CPU": 2, "GPU": 0}, 2, "use --max-concurrent 1"),
])
def test_impossible_resources(overrides, have, concurrent, match):
    with pytest.raises(SearchError, match=match):
        check_resources(trial_resources(load_config(None, overrides)), concurrent, have)


def test_baseline_point_is_the_base_configs_own_values(tmp_path):
    from tune.search import baseline_trial

    config = load_config(CONFIGS / "toy.yaml")
    path = write(tmp_path, "metric: eval/in_support\nbaseline: true\nparams:\n  langevin.c0: {loguniform: [1.0e-4, 1.0e-2]}\n"
                           "  schedule.family: {choice: [linear, drl]}\n")
    space = load_space(path, config)
    point = space.baseline_point(config.to_dict())
    assert point == {"langevin.c0": config.langevin.c0, "schedule.family": config.schedule.family}
    records = [{"trial_id": "a", "params": {"langevin.c0": 5e-4, "schedule.family": "drl"}, "objective": 0.9},
               {"trial_id": "b", "params": dict(point), "objective": 0.8}]
    assert baseline_trial(records, space, config.to_dict())["trial_id"] == "b"
    space.baseline = False
    assert baseline_trial(records, space, config.to_dict()) is None


def test_versus_baseline_compares_at_the_baselines_last_report():
    from tune.search import versus_baseline

    best = {"trial_id": "b", "objective": 0.9, "train_seconds": 150.0}
    baseline = {"trial_id": "a", "objective": 0.8, "train_seconds": 60.0}  # stopped by ASHA at its first rung
    curves = {"b": [{"train_seconds": 30.0, "objective": 0.7}, {"train_seconds": 60.0, "objective": 0.79},
                    {"train_seconds": 150.0, "objective": 0.9}]}
    versus = versus_baseline(best, baseline, curves, "max")
    assert versus == {"train_seconds": 60.0, "baseline_objective": 0.8, "best_objective": 0.79,
                      "best_beats_baseline": False}
    curves["b"][1]["objective"] = 0.85
    assert versus_baseline(best, baseline, curves, "max")["best_beats_baseline"]
    assert versus_baseline(baseline, baseline, {}, "max")["best_beats_baseline"] is False
    assert versus_baseline(best, None, curves, "max") is None


def test_best_trial_breaks_ties_by_trial_id_whatever_the_listing_order():
    from tune.search import best_trial

    records = [{"trial_id": f"t_0000{i}", "objective": objective}
               for i, objective in enumerate([0.9, 0.95, 0.95, float("nan"), None])]
    assert best_trial(records, "max")["trial_id"] == "t_00001"
    assert best_trial(records[::-1], "max")["trial_id"] == "t_00001"  # a resumed search lists trials anew
    assert best_trial(records[::-1], "min")["trial_id"] == "t_00000"
    assert best_trial(records[3:], "max") is None


def test_a_baseline_search_keeps_the_concurrency_limit(tmp_path):
    from tune.search import search_algorithm

    config = load_config(CONFIGS / "toy.yaml")
    space = load_space(write(tmp_path, "metric: eval/in_support\nbaseline: true\nparams: {langevin.c0: {uniform: [1.0e-4, 1.0e-2]}}\n"),
                       config)
    generator = search_algorithm(space, config.to_dict(), max_concurrent=2)
    assert generator.max_concurrent == 2  # Tune ignores max_concurrent_trials for a generator passed in
    space.baseline = False
    assert search_algorithm(space, config.to_dict(), max_concurrent=2) is None


def test_two_trials_of_the_toy_space_fit_on_two_cores():
    space = load_space(SPACES / "toy.yaml", load_config(CONFIGS / "toy.yaml"))
    trial = load_config(CONFIGS / "toy.yaml", [f"{k}={v}" for k, v in space.trial.items()])
    check_resources(trial_resources(trial), 2, {"CPU": 2, "GPU": 0})


def test_trial_config_and_best_config(tmp_path):
    base = load_config(CONFIGS / "toy.yaml", TINY_TOY)
    space = load_space(SPACES / "toy.yaml", base)
    params = {"schedule.family": "drl", "schedule.num_levels": 4, "langevin.c0": 5e-4}
    trial = trial_config(base.to_dict(), space, params, "abc_00001", str(tmp_path / "train"))
    assert (trial.run.name, trial.run.storage_path, trial.schedule.family, trial.schedule.num_levels) == (
        "abc_00001", str(tmp_path / "train"), "drl", 4)
    assert trial.train.time_budget_s == space.budget_s and trial.tune.eval_every_s == space.eval_every_s
    assert trial.ray.num_workers == 1 and trial.train.iterations == 1_000_000
    best = {"trial_id": "abc_00001", "params": params, "metric": 0.93, "objective": 0.93, "train_seconds": 180.2,
            "step": 3210}
    path = tmp_path / "best.yaml"
    path.write_text(best_config_yaml(base, best, "s", space))
    config = load_config(path)
    assert (config.run.name, config.schedule.family, config.langevin.c0, config.train.iterations) == ("s-best", "drl", 5e-4, 3210)
    assert config.ray.num_workers == base.ray.num_workers and config.tune.eval_every_s == 0  # trial-only settings stay out


@pytest.mark.parametrize(("args", "match"), [
    (["--space", "{bad}"], "params: unknown config key 'langevin.c00'"),
    (["--space", "tune/spaces/toy.yaml", "ray.use_gpu=true"], "impossible resources"),
])
def test_search_cli_bad_input_is_one_error_line_and_exit_2(tmp_path, args, match):
    bad = write(tmp_path, "metric: m\nparams: {langevin.c00: {uniform: [1, 2]}}\n")
    args = [str(bad) if a == "{bad}" else a for a in args]
    proc = subprocess.run([sys.executable, "tune/search.py", *args, "--ray-address", "local", *TINY_TOY,
                           f"run.output_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "RAY_TMPDIR": str(tmp_path / "ray"), "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0], proc.stderr
