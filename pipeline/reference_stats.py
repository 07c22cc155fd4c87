"""Reference feature statistics of a dataset version: computed once, stored beside its shards.

``DATA_URI/stats/EXTRACTOR.npz`` (local folder or s3://) holds the mean and covariance of the extractor's
features over every row of the dataset (docs/algorithm.md §9), the dataset version and the extractor's
fingerprint; the manifest names the file under ``reference_stats``. A file whose version or fingerprint
does not match (new data at the same URI, other Inception weights) is recomputed, never reused.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from cdrl.metrics.features import FeatureExtractor
from cdrl.metrics.frechet import feature_statistics
from pipeline import storage
from pipeline.datasets.manifest import MANIFEST_NAME, Manifest
from pipeline.datasets.reader import load_manifest, read_arrays

STATS_FOLDER = "stats"
FEATURE_BATCH = 500


@dataclass(frozen=True)
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    dataset_version: str
    fingerprint: str
    uri: str

    def describe(self) -> dict:
        """What a report records about the reference (no arrays)."""
        return {"uri": self.uri, "num_images": self.num_images, "dataset_version": self.dataset_version,
                "extractor_fingerprint": self.fingerprint}


def stats_name(extractor_name: str) -> str:
    return f"{STATS_FOLDER}/{extractor_name}.npz"


def stats_uri(data_uri: str, extractor_name: str) -> str:
    return storage.join(data_uri, stats_name(extractor_name))


def _encode(stats: ReferenceStats) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, mu=stats.mu, sigma=stats.sigma, num_images=stats.num_images,
             dataset_version=stats.dataset_version, fingerprint=stats.fingerprint)
    return buffer.getvalue()


def read_reference_stats(uri: str) -> ReferenceStats:
    """The statistics stored at ``uri``; FileNotFoundError when absent."""
    with np.load(io.BytesIO(storage.read_bytes(uri))) as saved:
        return ReferenceStats(saved["mu"], saved["sigma"], int(saved["num_images"]), str(saved["dataset_version"]),
                              str(saved["fingerprint"]), uri)


def compute_reference_stats(data_uri: str, manifest: Manifest, extractor: FeatureExtractor) -> ReferenceStats:
    """Features of every row of the dataset (validated read), then their mean and covariance."""
    x, _ = read_arrays(data_uri)
    parts = []
    with torch.no_grad():
        for start in tqdm(range(0, len(x), FEATURE_BATCH), desc=f"reference {extractor.name} features",
                          unit="batch", mininterval=2.0):
            parts.append(extractor(torch.from_numpy(x[start:start + FEATURE_BATCH])).cpu().double().numpy())
    mu, sigma = feature_statistics(np.concatenate(parts))
    return ReferenceStats(mu, sigma, len(x), manifest.version, extractor.fingerprint,
                          stats_uri(data_uri, extractor.name))


def ensure_reference_stats(data_uri: str, manifest: Manifest, extractor: FeatureExtractor) -> ReferenceStats:
    """The stored statistics of this dataset version and extractor, computing and storing them if needed."""
    uri = stats_uri(data_uri, extractor.name)
    if extractor.name in manifest.reference_stats or storage.exists(uri):
        try:
            stats = read_reference_stats(uri)
        except FileNotFoundError:
            stats = None
        if stats is not None and stats.dataset_version == manifest.version and stats.fingerprint == extractor.fingerprint:
            return stats
    stats = compute_reference_stats(data_uri, manifest, extractor)
    storage.write_bytes(uri, _encode(stats))
    _name_in_manifest(data_uri, extractor.name, manifest.version)
    return stats


def _name_in_manifest(data_uri: str, extractor_name: str, version: str) -> None:
    """Add ``stats/EXTRACTOR.npz`` to the published manifest (re-read first: another writer may have added one)."""
    current = load_manifest(data_uri)
    if current.version != version or current.reference_stats.get(extractor_name) == stats_name(extractor_name):
        return
    updated = dataclasses.replace(current, reference_stats={**current.reference_stats,
                                                            extractor_name: stats_name(extractor_name)})
    storage.write_bytes(storage.join(data_uri, MANIFEST_NAME), updated.to_json().encode())



def dataset_reference(data_uri: str, manifest: Manifest):
    """For ``Evaluator(reference=…)``: extractor ↦ this dataset version's statistics (ensured)."""
    return lambda extractor: ensure_reference_stats(data_uri, manifest, extractor)


def prepare_reference_stats(config, data_uri: str, manifest: Manifest) -> ReferenceStats | None:
    """Before training: make sure the statistics the run's evaluations need exist (None for 2-D data)."""
    from cdrl.metrics.features import build_extractor
    from pipeline.evaluation import EvalProtocol

    protocol = EvalProtocol.from_config(config, tuple(manifest.item_shape))
    if protocol.extractor is None:
        return None
    extractor = build_extractor(protocol.extractor, inception_weights=config.eval.inception_weights,
                                device="cuda" if torch.cuda.is_available() else "cpu")
    return ensure_reference_stats(data_uri, manifest, extractor)
