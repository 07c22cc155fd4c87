"""The Kubeflow Pipelines (kfp v2) retrain pipeline: prepare → train → evaluate → register/promote.

    make kfp-env                                                        # kfp in its own venv (.venv-kfp)
    .venv-kfp/bin/python infra/kubeflow/cdrl_pipeline.py --out cdrl_pipeline.yaml [--gpus 8]

Each step runs one of the repository's entry points in the project image, exactly as on a laptop:
``pipeline/prepare_data.py``, ``pipeline/train.py`` (warm start from ``models:/MODEL@champion``, from scratch on
the first run), ``pipeline/evaluate.py`` (the fixed protocol, a JSON report) and ``pipeline/promote.py``
(register the challenger, move ``champion`` if it beats the champion by ``min_improvement``). S3 and MLflow
settings come from the Secret ``cdrl-s3`` and ConfigMap ``cdrl-settings`` of infra/k8s/secret-example.yaml.
Train and evaluate run Ray inside their pod (one node, ``--gpus`` GPUs); for multi-node training use the
KubeRay RayJob of infra/k8s/ instead. Upload the YAML in the KFP UI, or schedule it with recurring_run.py.
"""

import argparse  # no `from __future__ import annotations`: kfp reads the annotations as types

from typing import Optional

from kfp import compiler, dsl, kubernetes

IMAGE = "ghcr.io/OWNER/cdrl-pipeline:TAG"
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
SETTINGS_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY")


def concat(*parts) -> dsl.ConcatPlaceholder:
    return dsl.ConcatPlaceholder(list(parts))


@dsl.container_component
def prepare_data(dataset: str, data_uri: str, source: Optional[str] = None):
    """Parquet shards + manifest at ``data_uri``; the same input gives the same dataset version."""
    return dsl.ContainerSpec(image=IMAGE, command=["python", "pipeline/prepare_data.py"],
                             args=["--dataset", dataset, "--out", data_uri,
                                   dsl.IfPresentPlaceholder(input_name="source", then=["--source", source])])


@dsl.container_component
def train(config: str, run_id: str, model_name: str, data_uri: str, storage_path: str, num_workers: int,
          use_gpu: bool, summary: dsl.Output[dsl.Artifact]):
    """One training run, warm-started from the champion; registration is left to the promote step."""
    return dsl.ContainerSpec(image=IMAGE, command=["python", "pipeline/train.py"], args=[
        "--config", config, concat("run.name=kfp-", run_id), concat("registry.model_name=", model_name),
        concat("data.uri=", data_uri), concat("run.storage_path=", storage_path),
        concat("ray.num_workers=", num_workers), concat("ray.use_gpu=", use_gpu), "registry.enabled=false",
        "--warm-start", concat("models:/", model_name, "@champion"), "--summary", summary.path])


@dsl.container_component
def evaluate(run_id: str, data_uri: str, num_samples: int, seed: int, report: dsl.Output[dsl.Artifact]):
    """The fixed protocol on the run's final checkpoint (found through its MLflow run)."""
    return dsl.ContainerSpec(image=IMAGE, command=["python", "pipeline/evaluate.py"], args=[
        "--model", concat("kfp-", run_id), "--data-uri", data_uri, "--num-samples", num_samples, "--seed", seed,
        "--json", report.path])


@dsl.container_component
def promote(config: str, run_id: str, model_name: str, min_improvement: float, report: dsl.Input[dsl.Artifact],
            decision: dsl.Output[dsl.Artifact]):
    """Challenger alias on the new version; champion alias only if it is better."""
    return dsl.ContainerSpec(image=IMAGE, command=["python", "pipeline/promote.py"], args=[
        "--config", config, concat("run.name=kfp-", run_id), concat("registry.model_name=", model_name),
        concat("retrain.min_improvement=", min_improvement), "--report", report.path, "--json", decision.path,
        "--exit-zero"])


def with_settings(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """S3 credentials and the MLflow URI from the same Secret and ConfigMap as the KubeRay manifests."""
    kubernetes.use_secret_as_env(task, secret_name="cdrl-s3", secret_key_to_env={k: k for k in S3_KEYS})
    kubernetes.use_config_map_as_env(task, config_map_name="cdrl-settings",
                                     config_map_key_to_env={k: k for k in SETTINGS_KEYS})
    return task.set_caching_options(False)  # a retrain must run even when its inputs look the same


def build_pipeline(gpus: int):
    @dsl.pipeline(name="cdrl-retrain", description="CDRL: prepare data, train from the champion, evaluate, promote")
    def cdrl_retrain(dataset: str = "cifar10", data_uri: str = "s3://BUCKET/data/cifar10",
                     config: str = "pipeline/configs/cifar10.yaml", model_name: str = "cdrl-cifar10",
                     storage_path: str = "s3://BUCKET/checkpoints", num_workers: int = max(gpus, 1),
                     use_gpu: bool = gpus > 0, eval_num_samples: int = 10_000, eval_seed: int = 0,
                     min_improvement: float = 0.5, source: Optional[str] = None):
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # the MLflow run (and checkpoint folder) is kfp-<pipeline job id>
        prepared = with_settings(prepare_data(dataset=dataset, data_uri=data_uri, source=source))
        trained = with_settings(train(config=config, run_id=run_id, model_name=model_name, data_uri=data_uri,
                                      storage_path=storage_path, num_workers=num_workers, use_gpu=use_gpu))
        trained.after(prepared)
        scored = with_settings(evaluate(run_id=run_id, data_uri=data_uri, num_samples=eval_num_samples,
                                        seed=eval_seed))
        scored.after(trained)
        decided = with_settings(promote(config=config, run_id=run_id, model_name=model_name,
                                        min_improvement=min_improvement, report=scored.outputs["report"]))
        for task in (trained, scored):
            if gpus:
                task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
            task.set_cpu_limit(str(6 * max(gpus, 1))).set_memory_limit(f"{24 * max(gpus, 1)}G")
        decided.set_cpu_limit("4").set_memory_limit("16G")

    return cdrl_retrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="cdrl_pipeline.yaml", help="compiled pipeline YAML (default: %(default)s)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the train and evaluate pods; 0: CPU only")
    args = parser.parse_args()
    compiler.Compiler().compile(build_pipeline(args.gpus), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
