"""Every config value and option is checked up front: one `error:` line naming the key, exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.cli
from cdrl.config import ConfigError, load_config
from tests.conftest import TINY_TOY

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("override", "key"), [
    ("train.log_every=0", "train.log_every"),
    ("train.checkpoint_every=-1", "train.checkpoint_every"),
    ("eval.every=-5", "eval.every"),
    ("train.time_budget_s=-1", "train.time_budget_s"),
    ("train.energy_betas=[0.9]", "train.energy_betas"),
    ("train.initializer_betas=[0.9, 1.5]", "train.initializer_betas"),
    ("model.energy_net.temb_dim=15", "model.energy_net.temb_dim"),
    ("model.initializer.temb_dim=7", "model.initializer.temb_dim"),
    ("model.initializer.groups=5", "model.initializer.groups"),
    ("model.initializer.base_channels=48", "model.initializer.groups"),
    ("model.initializer.dropout=1.0", "model.initializer.dropout"),
    ("model.energy_net.channel_mult=[]", "model.energy_net.channel_mult"),
    ("generation.batch_size=0", "generation.batch_size"),
    ("generation.steps_per_level=-1", "generation.steps_per_level"),
    ("generation.guidance_weight=-1", "generation.guidance_weight"),
    ("run.output_dir=s3://bucket/runs", "run.output_dir"),
    ("health.lr_scale=0", "health.lr_scale"),
    ("health.skip_limit=0", "health.skip_limit"),
    ("faults.storage_wait_s=-1", "faults.storage_wait_s"),
    ("tracking.experiment=' '", "tracking.experiment"),
])
def test_bad_value_names_its_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [*TINY_TOY, override])


@pytest.mark.parametrize("key", ["data.uri", "run.storage_path", "tracking.uri"])
def test_credentials_in_uris_are_refused_without_echoing_them(key):
    scheme = "https" if key == "tracking.uri" else "s3"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_config(None, [f"{key}={scheme}://AKIAEXAMPLE:TopSecretValue@host/path"])
    assert "TopSecretValue" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_backend_specific_settings_are_checked_before_any_data():
    from pipeline.train import check_backend

    config = load_config(None, ["run.storage_path=s3://bucket/ckpt"])
    with pytest.raises(ConfigError, match="run.storage_path.*--backend local"):
        check_backend(config, "local")
    check_backend(config, "ray")
    with pytest.raises(ConfigError, match=r"train\.batch_size: 63 is not divisible by ray\.num_workers=2"):
        check_backend(load_config(None, ["train.batch_size=63", "ray.num_workers=2"]), "ray")
    with pytest.raises(ConfigError, match="data.horizontal_flip"):
        check_backend(load_config(None, ["data.horizontal_flip=true"]), "local")


def test_exact_score_matching_on_images_is_refused_before_any_data():
    from pipeline.train import check_method_fits_data

    check_method_fits_data(load_config("pipeline/configs/exact_sm.yaml", []))  # 2-D: fine
    with pytest.raises(ConfigError, match="method: exact_sm .* digits has 64; use sliced_sm or dsm"):
        check_method_fits_data(load_config("pipeline/configs/exact_sm.yaml", ["data.name=digits"]))


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"pipeline/{script}", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})


@pytest.mark.subprocess
@pytest.mark.parametrize(("script", "args", "expected"), [
    ("train.py", ["train.log_every=0"], "train.log_every"),  # was a ZeroDivisionError traceback
    ("train.py", ["--backend", "local", "run.storage_path=s3://bucket/ckpt"], "run.storage_path"),
    ("train.py", ["train.batch_size=63"], "ray.num_workers=2"),  # was found only inside the Ray workers
    ("train.py", ["--no-such-option"], "--no-such-option"),
    ("prepare_data.py", ["--dataset", "8squares", "--out", "x", "--shards", "0"], "--shards"),
    ("sample.py", ["--num-samples", "3"], "--checkpoint"),
])
def test_entry_point_bad_input_is_one_error_line_and_exit_2(script, args, expected):
    proc = run(script, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr[-2000:]


def test_sample_rejects_bad_numbers_before_loading(tmp_path):
    from pipeline.sample import main

    for args, message in ((["--steps-per-level", "-1"], "--steps-per-level"), (["--guidance", "-2"], "--guidance"),
                          (["--device", "warp-drive"], "--device")):
        with pytest.raises(ConfigError, match=message):
            main(["--checkpoint", str(tmp_path / "none.pt"), "--num-samples", "2", "--out", str(tmp_path / "x.npy"),
                  *args])


class ParserSeen(Exception):
    def __init__(self, parser):
        self.parser = parser


def every_action(parser):
    for action in parser._actions:
        yield parser.prog, action
        if isinstance(action.choices, dict):  # sub-commands
            for sub in action.choices.values():
                yield from every_action(sub)


@pytest.mark.parametrize("entry", ["pipeline.train", "pipeline.sample", "pipeline.prepare_data", "infra.local.__main__"])
def test_help_describes_every_option(entry, monkeypatch):
    def capture(self, *args, **kwargs):
        raise ParserSeen(self)

    monkeypatch.setattr(pipeline.cli.Parser, "parse_args", capture)
    monkeypatch.setattr(pipeline.cli.Parser, "parse_intermixed_args", capture)
    module = __import__(entry, fromlist=["main"])
    with pytest.raises(ParserSeen) as seen:
        module.main([])
    missing = [f"{prog} {action.option_strings or action.dest}" for prog, action in every_action(seen.value.parser)
               if not action.help and action.dest != "command"]
    assert not missing, missing
