"""The benchmark scripts, run as a user runs them with tiny settings: JSON keys and positive numbers only.

No timing thresholds: these check that the scripts work, not how fast the machine is.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import BenchmarkError
from benchmarks.toy_quality import check_bar, parse_bar, report_bandwidths
from pipeline.metric_conditions import MetricCondition
from tests.conftest import TINY_TOY as CONFTEST_TINY_TOY

REPO = Path(__file__).resolve().parents[1]
TINY_TOY = ["train.batch_size=64", "langevin.num_steps=2"]
TINY_IMAGE = [  # cifar10 needs files: the benchmark uses N(0, 1) data of shape (3, 32, 32) instead
    "train.batch_size=4", "langevin.num_steps=1", "model.energy_net.base_channels=16",
    "model.energy_net.blocks_per_resolution=1", "model.initializer.base_channels=16", "model.initializer.groups=8",
    "model.initializer.num_res_blocks=1",
]
STEP_TIME_KEYS = {"benchmark", "timestamp", "config", "overrides", "settings", "data", "param_counts", "train_step_s",
                  "train_samples_per_s", "generation_s", "generation_samples_per_s", "matmul", "normalized",
                  "cuda_peak_memory_gib", "machine"}
TOY_QUALITY_KEYS = {"benchmark", "timestamp", "config", "overrides", "seed", "settings", "seconds_to_bar",
                    "iterations_to_bar", "train_seconds", "eval_seconds", "iterations", "mean_step_s", "final",
                    "curve", "machine"}
MACHINE_KEYS = {"cpu_model", "cpu_count", "torch_version", "torch_threads", "device", "load_average_1m"}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_positive_timings(summary: dict, count: int) -> None:
    assert summary["count"] == count == len(summary["all"])
    for key in ("median", "mean", "p90", "min", "max"):
        assert summary[key] > 0, key
    assert summary["min"] <= summary["median"] <= summary["max"]


@pytest.mark.subprocess
@pytest.mark.parametrize(("config", "overrides", "item_shape", "source", "tweedie"), [
    ("toy.yaml", TINY_TOY, [2], "builtin:8squares", "none"),
    ("cifar10.yaml", TINY_IMAGE, [3, 32, 32], "synthetic N(0,1) for cifar10", "faithful"),
])
def test_step_time_writes_documented_json(config, overrides, item_shape, source, tweedie, tmp_path):
    out = tmp_path / "step_time.json"
    proc = run_script("step_time.py", "--config", f"pipeline/configs/{config}", *overrides, "--iters", "2",
                      "--warmup", "1", "--gen-samples", "50", "--gen-repeats", "1", "--threads", "1",
                      "--json", str(out))
    report = json.loads(out.read_text())
    assert STEP_TIME_KEYS <= set(report) and MACHINE_KEYS <= set(report["machine"])
    assert report["benchmark"] == "step_time" and report["overrides"] == overrides
    assert report["data"] == {"source": source, "item_shape": item_shape, "labels": False}
    assert report["settings"]["tweedie"] == tweedie and report["settings"]["iters"] == 2
    assert_positive_timings(report["train_step_s"], 2)
    assert_positive_timings(report["generation_s"], 1)
    assert report["train_step_s"]["first"] > 0 and report["generation_s"]["warmup"] > 0
    assert report["matmul"]["size"] == 1024 and report["matmul"]["gflops"] > 0
    assert report["train_samples_per_s"] > 0 and report["generation_samples_per_s"] > 0
    assert all(v > 0 for v in report["normalized"].values())
    assert report["cuda_peak_memory_gib"] == {"train": None, "generation": None}
    assert all(count > 0 for count in report["param_counts"].values())
    assert report["machine"]["torch_threads"] == 1
    assert "train step" in proc.stdout and "GFLOP/s" in proc.stdout


@pytest.mark.subprocess
def test_toy_quality_writes_curve_and_time_to_bar(tmp_path):
    out = tmp_path / "toy_quality.json"
    proc = run_script("toy_quality.py", "--config", "pipeline/configs/toy.yaml", *TINY_TOY, "--budget-s", "3",
                      "--eval-every-s", "1", "--num-samples", "200", "--bar", "in_support>=0,mmd_bw4<=1",
                      "--seed", "3", "--threads", "1", "--json", str(out))
    report = json.loads(out.read_text())
    assert TOY_QUALITY_KEYS <= set(report) and MACHINE_KEYS <= set(report["machine"])
    assert report["seed"] == 3 and report["settings"]["bar"] == "in_support>=0,mmd_bw4<=1"
    curve = report["curve"]
    assert len(curve) >= 2
    point_keys = {"train_s", "iterations", "eval_s", "in_support", "balance", "mmd_bw1", "mmd_bw4", "bar_met"}
    for point in curve:
        assert point_keys <= set(point)
        assert point["train_s"] > 0 and point["iterations"] > 0 and point["eval_s"] > 0
        assert 0 <= point["in_support"] <= 1 and point["bar_met"] is True
    assert [p["iterations"] for p in curve] == sorted({p["iterations"] for p in curve})
    assert report["train_seconds"] == curve[-1]["train_s"] >= 3
    assert report["seconds_to_bar"] == curve[0]["train_s"] and report["iterations_to_bar"] == curve[0]["iterations"]
    assert report["eval_seconds"] > 0 and report["mean_step_s"] > 0
    assert report["final"] == {k: curve[-1][k] for k in ("in_support", "balance", "mmd_bw1", "mmd_bw4")}
    assert "BAR MET" in proc.stdout


def test_bar_parsing_and_checks():
    bar = parse_bar("in_support>=0.90, balance<=0.03,mmd_bw0.5<1e-3")
    assert bar == [MetricCondition("in_support", ">=", 0.9), MetricCondition("balance", "<=", 0.03),
                   MetricCondition("mmd_bw0.5", "<", 1e-3)]
    assert report_bandwidths(bar) == (0.5, 1.0)
    check_bar(bar, "8squares", report_bandwidths(bar))
    assert bar[0].holds({"in_support": 0.9}) and not bar[1].holds({"balance": 0.031})
    with pytest.raises(BenchmarkError, match="cannot read"):
        parse_bar("in_support=0.9")
    with pytest.raises(BenchmarkError, match="in_support"):
        check_bar(parse_bar("in_support>=0.9"), "rings", (1.0,))


def test_digits_fid_writes_curve_and_classifier_accuracy(tmp_path):
    out = tmp_path / "digits_fid.json"
    proc = run_script("digits_fid.py", "train.batch_size=16", "langevin.num_steps=1", "model.energy_net.base_channels=8",
                      "model.initializer.base_channels=16", "eval.num_samples=8", "generation.batch_size=8",
                      "train.log_every=1", "--budget-s", "0.5", "--eval-every", "1", "--threads", "1",
                      "--output-dir", str(tmp_path),
                      "--json", str(out))
    report = json.loads(out.read_text())
    assert report["benchmark"] == "digits_fid" and report["metric"] == "fid/digits_8"
    assert report["curve"][0]["iterations"] == 1 and report["curve"][-1]["iterations"] == report["iterations"]
    assert all(point["fid/digits_8"] > 0 and point["eval/samples_per_s"] > 0 for point in report["curve"])
    assert report["final_fid"] == report["curve"][-1]["fid/digits_8"] and report["real_digits_fid"] > 0
    assert report["classifier_held_out_accuracy"] > 0.95 and MACHINE_KEYS <= set(report["machine"])
    assert "fid/digits_8" in proc.stdout and "held-out" in proc.stdout


TINY_NETS = [o for o in CONFTEST_TINY_TOY if o.startswith(("model.", "langevin.", "train.batch_size"))]
STAND_IN_OFFICIAL = '''import json, os, time
start = time.time()
n = int(os.environ["N_IT"])
print(json.dumps({"iter_s": 0.5 + 0.0 * n, "gen_s": 2.0 + 0.0 * (time.time() - start)}))
'''


def test_vs_official_alternates_and_reports_ratios(tmp_path):
    """The alternation and the ratio arithmetic, with a stand-in for the official timing copy (fixed numbers)."""
    official = tmp_path / "official_timed.py"
    official.write_text(STAND_IN_OFFICIAL)
    out = tmp_path / "vs.json"
    run_script("vs_official.py", "--official-timed", str(official), *TINY_NETS, "--rounds", "2", "--iters", "1",
               "--threads", "1", "--clock", "cpu", "--json", str(out))
    report = json.loads(out.read_text())
    assert [r["order"] for r in report["rounds"]] == [["official", "ours"], ["ours", "official"]]
    ours = report["median"]["ours"]
    assert report["median"]["official"] == {"iter_s": 0.5, "gen_s": 2.0}
    assert report["speedup"] == {"iter_s": 0.5 / ours["iter_s"], "gen_s": 2.0 / ours["gen_s"]}
    assert report["settings"]["clock"] == "cpu" and len(report["load_1m"]) == 4
    assert 0 < report["ours_utilization"]["fraction_of_bf16_peak"]


def test_vs_official_refuses_a_missing_official_script(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vs_official.py"), "--official-timed",
                           str(tmp_path / "missing.py")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --official-timed")
