"""The evaluation protocol, reference statistics beside the shards (local and S3), and model references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cdrl.checkpoint import build_checkpoint, save_checkpoint
from cdrl.config import load_config
from pipeline import storage
from pipeline.datasets.catalog import open_source
from pipeline.datasets.reader import load_manifest, validate_dataset
from pipeline.datasets.writer import write_dataset
from pipeline.evaluation import Evaluator
from pipeline.loop import WorkerContext, build_worker_trainer
from pipeline.model_ref import ModelRefError, resolve_checkpoint
from pipeline.reference_stats import ensure_reference_stats, read_reference_stats
from tests.conftest import TINY_TOY


class PixelMeans:
    """A tiny FeatureExtractor: per-row means of each digit (8 features)."""

    name, dim = "rowmeans", 8

    def __init__(self, fingerprint: str = "rowmeans-1") -> None:
        self.fingerprint, self.calls = fingerprint, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return images.float().mean(dim=(1, 3))


def test_samples_and_scores_do_not_depend_on_the_worker_count(tmp_path):
    config = load_config(None, [*TINY_TOY, "eval.num_samples=50", "generation.batch_size=8", "eval.seed=3",
                                f"run.output_dir={tmp_path}"])
    trainer = build_worker_trainer(config, (2,), WorkerContext())
    nets = {name: trainer.averaged(name) for name in ("energy_net", "initializer")}, trainer.objective.levels
    alone, _ = Evaluator(config, (2,)).run(*nets, out_dir=None)
    rank0, rank1 = (Evaluator(config, (2,), rank=r, world_size=2) for r in (0, 1))
    shares = [rank0.share(*nets), rank1.share(*nets)]
    assert [len(s.payload) for s in shares] == [3 * 8 + 2, 3 * 8]  # blocks 0, 2, 4, 6 (of 2 samples) and 1, 3, 5
    split, _ = rank0.finish(shares, nets[0]["energy_net"], nets[1], None, "x", 0.0)
    for key in ("eval/in_support", "eval/balance", "eval/mmd_bw1", "eval/sample_nan_fraction"):
        assert split[key] == pytest.approx(alone[key], abs=1e-12), key
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    Evaluator(config, (2,)).run(*nets, out_dir=None)
    assert torch.equal(torch.rand(1), before)  # evaluation leaves the training RNG alone


@pytest.mark.parametrize("where", ["local", "s3"])
def test_reference_stats_stored_beside_the_shards_and_named_in_the_manifest(where, tmp_path, request):
    if where == "s3":
        stack = request.getfixturevalue("local_s3")
        for key, value in stack.env.items():
            request.getfixturevalue("monkeypatch").setenv(key, value)
        uri = f"s3://{stack.bucket}/eval-test/digits"
    else:
        uri = str(tmp_path / "digits")
    manifest = write_dataset(open_source("digits"), uri)
    extractor = PixelMeans()
    stats = ensure_reference_stats(uri, manifest, extractor)
    assert stats.uri == storage.join(uri, "stats/rowmeans.npz") and stats.num_images == 1797
    assert stats.mu.shape == (8,) and stats.sigma.shape == (8, 8) and stats.dataset_version == manifest.version
    republished = validate_dataset(uri)  # the manifest still validates, and the version did not change
    assert republished.version == manifest.version and republished.reference_stats == {"rowmeans": "stats/rowmeans.npz"}
    stored = read_reference_stats(stats.uri)
    np.testing.assert_array_equal(stored.sigma, stats.sigma)
    calls = extractor.calls
    ensure_reference_stats(uri, republished, extractor)
    assert extractor.calls == calls  # computed once, then read
    other_weights = PixelMeans("rowmeans-2")
    assert ensure_reference_stats(uri, load_manifest(uri), other_weights).fingerprint == "rowmeans-2"
    assert other_weights.calls > 0  # statistics of other weights are recomputed, never reused


def _checkpoint(tmp_path, name: str = "c.pt"):
    config = load_config(None, [*TINY_TOY, f"run.output_dir={tmp_path}"])
    trainer = build_worker_trainer(config, (2,), WorkerContext())
    return save_checkpoint(build_checkpoint(trainer.state_dict(), config.to_dict(), (2,)), tmp_path / name)


def test_model_refs_resolve_files_folders_and_run_names(tmp_path, monkeypatch):
    path = _checkpoint(tmp_path)
    assert resolve_checkpoint(str(path)) == str(path)
    ray_run = tmp_path / "ray" / "myrun"
    for stamp in ("2026-01-01_00-00-00.000000", "2026-01-02_00-00-00.000000"):
        (ray_run / f"checkpoint_{stamp}").mkdir(parents=True)
        (ray_run / f"checkpoint_{stamp}" / "checkpoint.pt").write_bytes(path.read_bytes())
    newest = str(ray_run / "checkpoint_2026-01-02_00-00-00.000000" / "checkpoint.pt")
    assert resolve_checkpoint(str(ray_run)) == newest
    assert resolve_checkpoint(str(ray_run / "checkpoint_2026-01-02_00-00-00.000000")) == newest
    local_run = tmp_path / "runs" / "localrun" / "checkpoints"
    local_run.mkdir(parents=True)
    for step in (4, 8):
        (local_run / f"step_{step:08d}.pt").write_bytes(path.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_checkpoint("localrun").endswith("runs/localrun/checkpoints/step_00000008.pt")
    with pytest.raises(ModelRefError, match="nosuchrun: not a checkpoint path or URI, nor a run"):
        resolve_checkpoint("nosuchrun")
    with pytest.raises(ModelRefError, match="no such checkpoint"):
        resolve_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(ModelRefError, match="no checkpoint in this folder"):
        resolve_checkpoint(str(tmp_path / "runs"))
