"""Rank 0's MLflow writes, off the training thread: an MLflow outage never stalls or fails training.

Metrics, tags and artifacts go into an ordered queue that a background thread sends. While the server is
unreachable the thread retries with backoff (1 s doubling to 30 s) and the queue keeps everything; when
the server answers again the backlog is flushed in order. Nothing is lost silently: past
``capacity`` metrics, or whatever is still unsent when the run ends, is written to a JSONL file in the
run folder and reported (``unsent`` in :meth:`close`'s result, a tag on the run when MLflow is back).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

METRICS_PER_BATCH = 1000


class BufferedRunLogger:
    def __init__(self, uri: str, run_id: str, spill_file: str | Path, capacity: int = 200_000):
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.uri, self.run_id = uri, run_id
        self.spill_file = Path(spill_file)
        self.capacity = capacity
        self.queue: deque[tuple[str, Any]] = deque()
        self.queued_metrics = 0
        self.spilled = 0
        self.in_flight = 0  # queue entries the writer is sending now (never spilled from under it)
        self.condition = threading.Condition()
        self.closing = False
        self.outage_since: float | None = None
        self.thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
        self.thread.start()

    # ----------------------------------------------------------------------------- producer side
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._put("metrics", entries, len(entries))

    def log_artifact(self, path: str | Path, folder: str) -> None:
        self._put("artifact", (str(path), folder), 0)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._put("tags", {k: str(v) for k, v in tags.items()}, 0)

    def _put(self, kind: str, payload: Any, num_metrics: int) -> None:
        with self.condition:
            self.queue.append((kind, payload))
            self.queued_metrics += num_metrics
            while self.queued_metrics > self.capacity:
                self._spill_oldest_metrics()
            self.condition.notify()

    def _spill_oldest_metrics(self) -> None:
        for index, (kind, payload) in enumerate(self.queue):
            if kind == "metrics" and index >= self.in_flight:
                del self.queue[index]
                self._spill(payload)
                return

    def _spill(self, metrics: list) -> None:
        self.spill_file.parent.mkdir(parents=True, exist_ok=True)
        with self.spill_file.open("a") as f:
            for m in metrics:
                f.write(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}) + "\n")
        self.queued_metrics -= len(metrics)
        self.spilled += len(metrics)

    # ----------------------------------------------------------------------------- writer thread
    def _next_batch(self) -> tuple[str, Any, int] | None:
        """The oldest operation; consecutive metric operations merged into one batch."""
        with self.condition:
            while not self.queue and not self.closing:
                self.condition.wait()
            if not self.queue:
                return None
            kind, payload = self.queue[0]
            if kind != "metrics":
                self.in_flight = 1
                return kind, payload, 1
            merged, count = [], 0
            for kind_i, payload_i in self.queue:
                if kind_i != "metrics" or len(merged) + len(payload_i) > METRICS_PER_BATCH and merged:
                    break
                merged.extend(payload_i)
                count += 1
            self.in_flight = count
            return "metrics", merged, count

    def _send(self, kind: str, payload: Any) -> None:
        if kind == "metrics":
            self.client.log_batch(self.run_id, metrics=payload)
        elif kind == "tags":
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in payload.items()])
        else:
            self.client.log_artifact(self.run_id, payload[0], artifact_path=payload[1])

    def _run(self) -> None:
        delay = 1.0
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            kind, payload, count = batch
            try:
                self._send(kind, payload)
            except Exception as error:  # noqa: BLE001 — any client error: keep the data, retry later
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    print(f"warning: MLflow at {self.uri} unreachable ({' '.join(str(error).split())[:300]}); "
                          "training continues, metrics are buffered", file=sys.stderr, flush=True)
                retry_at = time.monotonic() + delay
                with self.condition:
                    while not self.closing and time.monotonic() < retry_at:
                        self.condition.wait(retry_at - time.monotonic())
                    if self.closing:
                        return
                delay = min(2 * delay, 30.0)
                continue
            with self.condition:
                for _ in range(count):
                    done_kind, done_payload = self.queue.popleft()
                    if done_kind == "metrics":
                        self.queued_metrics -= len(done_payload)
                self.in_flight = 0
                self.condition.notify_all()
            if self.outage_since is not None:
                print(f"MLflow at {self.uri} answers again after {time.monotonic() - self.outage_since:.0f} s; "
                      "flushing the buffered metrics", file=sys.stderr, flush=True)
                self.outage_since = None
            delay = 1.0

    # ----------------------------------------------------------------------------- shutdown
    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is sent (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self.condition:
            while self.queue and time.monotonic() < deadline:
                self.condition.wait(min(1.0, max(deadline - time.monotonic(), 0.01)))
            return not self.queue

    def close(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Flush for up to ``timeout_s``; spill whatever is left. Returns {"unsent": n, "file": path or None}."""
        self.flush(timeout_s)
        with self.condition:
            self.closing = True
            leftover = [payload for kind, payload in self.queue if kind == "metrics"]
            self.queue.clear()
            self.condition.notify_all()
        for metrics in leftover:
            self._spill(metrics)
        self.thread.join(timeout=5.0)
        if self.spilled:
            print(f"warning: {self.spilled} metrics could not be sent to MLflow at {self.uri}; they are in "
                  f"{self.spill_file}", file=sys.stderr, flush=True)
        return {"unsent": self.spilled, "file": str(self.spill_file) if self.spilled else None}
