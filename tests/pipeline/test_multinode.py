"""Training across Ray nodes, and losing one: a 3-node Ray cluster simulated on this machine.

The head (0 CPUs, the driver's node, as on a real cluster) plus two worker nodes with 2 CPUs each and a
distinct custom resource. ``ray.placement_strategy=STRICT_SPREAD`` forces the two Ray Train workers onto
different nodes, so DDP's all-reduces cross nodes. Data shards and checkpoints live in S3 (SeaweedFS),
metrics in an ``mlflow server``. After the first S3 checkpoint the driver's local run folder is deleted
and one worker node is removed; a replacement node joins (what an autoscaler does) and Ray Train restarts
the worker group from the S3 checkpoint on the surviving and the new node, to the last step.
"""
from __future__ import annotations

import shutil
import threading
import time

import boto3
import pytest

from cdrl.config import load_config
from tests.conftest import TINY_TOY
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ITERATIONS = 200  # the node is lost after the first checkpoint (step 40), with 160 steps still to go
CHECKPOINT_EVERY = 40


def worker_group_nodes(seen: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Record the nodes of each created Ray Train worker group (its STRICT_SPREAD placement group's bundles,
    one per worker; the GCS answers without the dashboard) in ``seen``, first appearance order."""
    from ray.util import placement_group_table

    for group in placement_group_table().values():
        if group["strategy"] == "STRICT_SPREAD" and group["state"] == "CREATED":
            nodes = tuple(group["bundles_to_node_id"][i] for i in sorted(group["bundles_to_node_id"]))
            if nodes not in seen:
                seen.append(nodes)
    return seen


def cluster_state() -> str:
    """Nodes and placement groups, for the message of a timeout."""
    import ray
    from ray.util import placement_group_table

    nodes = [(n["NodeID"][:8], n["Alive"], n["Resources"]) for n in ray.nodes()]
    groups = [(g["strategy"], g["state"], g["bundles_to_node_id"]) for g in placement_group_table().values()]
    return f"nodes {nodes}; placement groups {groups}"


def test_two_nodes_strict_spread_s3_mlflow_and_resume_after_losing_a_node(local_stack, tmp_path, monkeypatch):
    import ray
    from mlflow import MlflowClient
    from ray.cluster_utils import Cluster

    from pipeline.datasets.catalog import open_source
    from pipeline.datasets.writer import write_dataset
    from pipeline.ray_backend import train_on_ray
    from pipeline.run_data import dataset_for_run

    for key, value in local_stack.env.items():  # the driver and every node started below see S3 and MLflow
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")  # actor start-up on a loaded 2-core CI box
    monkeypatch.setenv("RAY_raylet_start_wait_time_s", "180")  # node start-up on a loaded 2-core box
    # A node starved of CPU must not be declared dead (default: 5 missed 3 s health checks); a removed node
    # unregisters at once, so this does not slow the node loss down.
    monkeypatch.setenv("RAY_health_check_failure_threshold", "40")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    bucket = local_stack.bucket
    # seed 7: content (and MLflow dataset digest) of its own; MLflow keeps one dataset per (name, digest) in an
    # experiment, with the first source it saw, which would hide another test's data URI
    write_dataset(open_source("8squares", num_points=2000, seed=7), f"s3://{bucket}/multinode/data", 2)
    config = load_config(None, [
        *TINY_TOY, "run.name=multinode", f"run.output_dir={tmp_path / 'driver'}", "ray.num_workers=2",
        "ray.cpus_per_worker=1", "ray.placement_strategy=STRICT_SPREAD", "ray.max_failures=2",
        f"train.iterations={ITERATIONS}", f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.log_every=20",
        f"data.uri=s3://{bucket}/multinode/data", f"run.storage_path=s3://{bucket}/multinode/ckpt",
        f"tracking.uri={local_stack.mlflow_uri}", "eval.num_samples=200",
        "registry.enabled=false",  # registering is tests/pipeline/test_ray_job_submit.py's
    ])
    s3 = boto3.client("s3", endpoint_url=local_stack.s3_endpoint, region_name="us-east-1")

    def checkpoints() -> list[str]:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="multinode/ckpt/multinode/")
        return sorted(o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("/checkpoint.pt"))

    groups: list[tuple[str, ...]] = []  # the nodes of each worker group, in order
    started = time.monotonic()

    def phase(what: str) -> None:  # progress with timings, shown when the test fails
        print(f"{time.monotonic() - started:6.1f}s {what}", flush=True)

    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=0, include_dashboard=False)  # the first node added is the head
        node_a = cluster.add_node(num_cpus=2, resources={"node_a": 1})
        node_b = cluster.add_node(num_cpus=2, resources={"node_b": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        phase("3 nodes up")
        data_uri, manifest = dataset_for_run(config)
        outcome: dict = {}

        def fit() -> None:
            try:
                outcome["summary"] = train_on_ray(config, data_uri, manifest).to_summary()
            except BaseException as err:  # noqa: BLE001 — re-raised in the test thread below
                outcome["error"] = err

        runner = threading.Thread(target=fit, daemon=True)
        runner.start()
        wait_for(lambda: bool(worker_group_nodes(groups) and checkpoints()) or not runner.is_alive(),
                 "the first S3 checkpoint", 400, state=cluster_state)
        assert runner.is_alive(), outcome.get("error") or "training ended before the first checkpoint was seen"
        phase(f"first checkpoint {checkpoints()[0]}")
        assert len(groups) == 1 and set(groups[0]) == {node_a.node_id, node_b.node_id}  # one worker per node

        shutil.rmtree(tmp_path / "driver", ignore_errors=True)  # nothing may depend on the driver's disk
        cluster.remove_node(node_b)
        node_c = cluster.add_node(num_cpus=2, resources={"node_c": 1})
        phase("node b removed, node c added")
        wait_for(lambda: len(worker_group_nodes(groups)) > 1 or not runner.is_alive(),
                 "the restarted worker group", 400, state=cluster_state)
        phase("worker group restarted")
        runner.join(timeout=400)
        phase("training finished")
        assert not runner.is_alive(), "training did not finish after the node was replaced"
        if "error" in outcome:
            raise outcome["error"]
        summary = outcome["summary"]
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert summary["step"] == ITERATIONS and summary["num_workers"] == 2
    assert set(groups[-1]) == {node_a.node_id, node_c.node_id}  # restarted on the survivor + the new node
    assert summary["checkpoint"].startswith(f"s3://{bucket}/multinode/ckpt/multinode/checkpoint_")
    assert any(key.startswith("multinode/ckpt/multinode/") for key in checkpoints())
    client = MlflowClient(local_stack.mlflow_uri)
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "energy_loss")]
    assert steps[-1] == ITERATIONS and max(steps) == ITERATIONS
    assert "eval/in_support" in run.data.metrics
