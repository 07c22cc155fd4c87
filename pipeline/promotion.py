"""Champion / challenger: register a trained model as the ``challenger``, score the ``champion`` with the same
fixed protocol on the same dataset version, and move ``champion`` only when the challenger is better by at least
``retrain.min_improvement`` on the primary metric. Used by ``pipeline/retrain.py`` and ``pipeline/promote.py``.

Exit codes of both commands (``--help`` lists them too).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cdrl.config import Config

EXIT_UP_TO_DATE = 0  # nothing new to train on: the champion (or the last challenger) has this data and config
EXIT_FAILED = 1  # training, evaluation or registration failed
EXIT_BAD_INPUT = 2  # bad config, data or URI (one `error:` line)
EXIT_PROMOTED = 10  # the challenger is the new champion
EXIT_KEPT = 11  # the challenger is registered, the champion stays
EXIT_CODES_HELP = f"""exit codes:
  {EXIT_UP_TO_DATE}   up to date: the champion or the last challenger was trained on this dataset version and config
  {EXIT_PROMOTED}  promoted: the challenger (alias challenger) is now also the champion
  {EXIT_KEPT}  kept: the challenger is registered (alias challenger), the champion did not change
  {EXIT_FAILED}   failed: training, evaluation or registration failed (traceback and an error: line)
  {EXIT_BAD_INPUT}   bad input: a config key, dataset, URI or tracking server (one error: line)
  --exit-zero maps {EXIT_PROMOTED} and {EXIT_KEPT} to 0 (for schedulers that count any other code as a failure)"""


@dataclass
class Decision:
    promoted: bool
    reason: str
    metric: str
    higher_is_better: bool
    challenger_score: float
    champion_score: float | None
    min_improvement: float
    challenger_version: str
    champion_version: str | None  # the champion before the decision

    @property
    def exit_code(self) -> int:
        return EXIT_PROMOTED if self.promoted else EXIT_KEPT


def improvement(challenger: dict, champion: dict) -> float:
    """How much better the challenger's primary metric is (positive = better), in the metric's own units."""
    gain = challenger["value"] - champion["value"]
    return gain if challenger["higher_is_better"] else -gain


def decide(challenger: dict, champion: dict | None, min_improvement: float) -> tuple[bool, str]:
    """(promote?, why) from two ``primary_metric`` entries of evaluation reports."""
    if champion is None:
        return True, "no champion yet"
    if champion["name"] != challenger["name"]:
        raise ValueError(f"cannot compare {challenger['name']} with {champion['name']}")
    gain = improvement(challenger, champion)
    verb = "improves" if gain >= min_improvement else "does not improve"
    return gain >= min_improvement, (f"{challenger['name']} {verb} by >= {min_improvement:g}: challenger "
                                     f"{challenger['value']:.6g} vs champion {champion['value']:.6g} ({gain:+.6g})")


def promote(config: Config, tracking_uri: str, run_id: str, checkpoint: str, challenger_report: dict,
            dataset_version: str, version_tags: dict[str, str] | None = None, workers: int | None = None) -> Decision:
    """Register ``checkpoint`` as the challenger (run ``run_id``), score the champion with the challenger's
    protocol on the challenger's dataset, move ``champion`` if better; log everything to run ``run_id``.
    ``workers``: Ray tasks of the champion's evaluation (``evaluate_model``; 0: this process)."""
    from mlflow import MlflowClient

    from pipeline.evaluate import evaluate_model
    from pipeline.registry import CHALLENGER, CHAMPION, DATASET_TAG, alias_version, model_name, register_checkpoint

    metric = challenger_report["primary_metric"]
    tags = {DATASET_TAG: dataset_version, "step": str(challenger_report.get("step", "")),
            f"score.{metric['name']}": f"{metric['value']:.6g}", **(version_tags or {})}
    name = model_name(config)
    champion = alias_version(name, CHAMPION, tracking_uri)
    _, version = register_checkpoint(checkpoint, config, tracking_uri, run_id, tags=tags, aliases=(CHALLENGER,))
    champion_report = None
    if champion is not None:
        protocol = challenger_report["protocol"]
        print(f"scoring the champion (version {champion.version}) with the same protocol")
        champion_report = evaluate_model(f"models:/{name}/{champion.version}", protocol["num_samples"],
                                         protocol["seed"], tracking_uri=tracking_uri, workers=workers,
                                         data_uri=challenger_report["data_uri"])
    promoted, reason = decide(metric, champion_report["primary_metric"] if champion_report else None,
                              config.retrain.min_improvement)
    client = MlflowClient(tracking_uri)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = Decision(promoted, reason, metric["name"], metric["higher_is_better"], metric["value"],
                        champion_report["primary_metric"]["value"] if champion_report else None,
                        config.retrain.min_improvement, version, champion.version if champion else None)
    log_decision(client, run_id, decision, dataset_version, champion, challenger_report, champion_report)
    return decision


def log_decision(client, run_id: str, decision: Decision, dataset_version: str, champion, challenger_report: dict,
                 champion_report: dict | None) -> None:
    """Decision, both scores and both dataset versions on the challenger's run (tags ``retrain.*``, metrics
    ``retrain/*``), the two evaluation reports as ``retrain/*.json`` artifacts."""
    from pipeline.registry import DATASET_TAG

    tags = {"retrain.decision": "promoted" if decision.promoted else "kept", "retrain.reason": decision.reason,
            "retrain.primary_metric": decision.metric, "retrain.min_improvement": str(decision.min_improvement),
            "retrain.dataset_version": dataset_version, "retrain.challenger_version": decision.challenger_version}
    if champion is not None:
        tags.update({"retrain.champion_version": str(champion.version),
                     "retrain.champion_dataset_version": champion.tags.get(DATASET_TAG, "unknown")})
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_metric(run_id, "retrain/challenger_score", decision.challenger_score)
    if decision.champion_score is not None:
        client.log_metric(run_id, "retrain/champion_score", decision.champion_score)
    with tempfile.TemporaryDirectory() as folder:
        for label, report in (("challenger", challenger_report), ("champion", champion_report)):
            if report is not None:
                path = Path(folder) / f"{label}.json"
                path.write_text(json.dumps(report, indent=2, default=str))
                client.log_artifact(run_id, str(path), artifact_path="retrain")
        path = Path(folder) / "decision.json"
        path.write_text(json.dumps(asdict(decision), indent=2))
        client.log_artifact(run_id, str(path), artifact_path="retrain")
