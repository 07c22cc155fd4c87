"""Runs that start together log the same dataset input without failing (real MLflow, sqlite store).

MLflow looks a dataset up and then inserts it, so concurrent runs of one experiment (Tune trials) race for the
insert; on a fresh store this made all but one of six simultaneous runs fail in 5 of 6 tries before the retry in
``pipeline.tracking.log_dataset_input``."""
from __future__ import annotations

import threading
from types import SimpleNamespace

from pipeline.tracking import log_dataset_input

RUNS = 6


def test_simultaneous_runs_all_get_the_dataset_input(tmp_path):
    from mlflow import MlflowClient

    # the manifest fields log_dataset_input reads
    manifest = SimpleNamespace(dataset="8squares", version="ab" * 32, dtype="float32", item_shape=(2,))
    for attempt in range(3):  # a fresh store each time: the race shows on the experiment's first dataset insert
        uri = f"sqlite:///{tmp_path / f'mlflow{attempt}.db'}"
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("inputs")
        run_ids = [client.create_run(experiment_id).info.run_id for _ in range(RUNS)]
        start, errors = threading.Barrier(RUNS), []

        def log(run_id: str) -> None:
            start.wait()
            try:
                log_dataset_input(MlflowClient(uri), run_id, str(tmp_path / "data"), manifest)
            except Exception as err:  # noqa: BLE001 - collected, then asserted on in the main thread
                errors.append(err)

        threads = [threading.Thread(target=log, args=(run_id,)) for run_id in run_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for run_id in run_ids:
            inputs = client.get_run(run_id).inputs.dataset_inputs
            assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("8squares", manifest.version[:36])]
