"""The deployment files (everything under infra/, and ray_cluster.yaml) stay loadable and in step with the code.

Fast and offline: no cluster, no Docker, no AWS. Commands are found wherever a manifest holds them (container
command/args, the RayJob entrypoint, the commented examples in ray_cluster.yaml) and checked against this
repository: the script exists, the config exists, and ``cdrl.config.load_config`` accepts every override.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest
import yaml

from cdrl.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
CLUSTER_LAUNCHER = REPO / "ray_cluster.yaml"
MANIFESTS = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")]) + [CLUSTER_LAUNCHER]
KUBE_MANIFESTS = [path for path in MANIFESTS if path != CLUSTER_LAUNCHER]
DOCKERFILES = sorted(path for path in (INFRA / "docker").glob("Dockerfile*") if path.suffix != ".dockerignore")

IMAGE_PREFIX = "ghcr.io/OWNER/cdrl-pipeline:"
KUBECTL_IMAGE = re.compile(r"registry\.k8s\.io/kubectl:v1\.\d+\.\d+")  # pods that only talk to the Kubernetes API
AWS_ACCESS_KEY = re.compile(r"AKIA[0-9A-Z]{16}")
SHELL_OPERATOR = re.compile(r"^[();<>|&]+$")


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def documents(path: Path) -> list[Any]:
    """Every YAML document in the file (``---`` separated), empty ones dropped, then the manifests that
    ConfigMaps carry as ``*.yaml`` values (the RayJob that the retrain CronJob creates)."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    carried = [yaml.safe_load(text) for doc in docs if isinstance(doc, dict) and doc.get("kind") == "ConfigMap"
               for key, text in doc.get("data", {}).items() if key.endswith((".yaml", ".yml"))]
    return docs + carried


def walk(node: Any) -> Iterator[Any]:
    """Every node of a parsed YAML tree, depth first."""
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def command_texts(node: Any) -> Iterator[str]:
    """Shell text in a parsed manifest: every string, and every list of strings as one command line."""
    for item in walk(node):
        if isinstance(item, str):
            yield item
        elif isinstance(item, list) and len(item) > 1 and all(isinstance(x, str) for x in item):
            yield shlex.join(item)


def comment_text(path: Path) -> str:
    """The file's whole-line comments, '#' stripped: ray_cluster.yaml documents its commands there."""
    lines = path.read_text().splitlines()
    return "\n".join(line.split("#", 1)[1] for line in lines if line.lstrip().startswith("#"))


class Invocation(NamedTuple):
    file: str
    script: str  # repository-relative, e.g. pipeline/train.py
    args: list[str]

    def __str__(self) -> str:
        return f"{self.file}: python {self.script} {shlex.join(self.args)}"


def pipeline_invocations(text: str) -> Iterator[tuple[str, list[str]]]:
    """(script, args) for each ``python pipeline/NAME.py ARGS`` in shell text, quoted sub-commands included."""
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # prose with an apostrophe, not a command
            continue
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if SHELL_OPERATOR.match(token):
                for i, word in enumerate(segment[:-1]):
                    script = re.search(r"(?:^|/)(pipeline/\w+\.py)$", segment[i + 1])
                    if Path(word).name in ("python", "python3") and script:
                        yield script.group(1), segment[i + 2 :]
                segment = []
            elif any(ch.isspace() for ch in token):  # `bash -c '...'`, `ray exec CFG '...'`
                yield from pipeline_invocations(token)
            else:
                segment.append(token)


def find_invocations() -> list[Invocation]:
    found = []
    for path in MANIFESTS:
        commands = [doc for doc in documents(path) if doc.get("kind") != "ConfigMap"]  # carried manifests come parsed
        texts = [text for doc in commands for text in command_texts(doc)] + [comment_text(path)]
        for text in texts:
            for script, args in pipeline_invocations(text):
                if Invocation(rel(path), script, args) not in found:
                    found.append(Invocation(rel(path), script, args))
    return found


INVOCATIONS = find_invocations()
TRAIN_INVOCATIONS = [inv for inv in INVOCATIONS if inv.script == "pipeline/train.py"]
RETRAIN_INVOCATIONS = [inv for inv in INVOCATIONS if inv.script == "pipeline/retrain.py"]


def config_of(inv: Invocation) -> Config:
    """Resolve a train.py or retrain.py command line exactly as the script does; fails on unknown flags or keys."""
    from pipeline.retrain import parse_args as parse_retrain_args
    from pipeline.train import parse_args

    try:
        args = (parse_retrain_args if inv.script == "pipeline/retrain.py" else parse_args)(inv.args)
    except SystemExit:
        pytest.fail(f"{inv.script} rejects the arguments of {inv}")
    config_path = Path(args.config)
    return load_config(config_path if config_path.is_absolute() else REPO / config_path, args.overrides)


def kube_object(path: str, kind: str) -> dict[str, Any]:
    matches = [doc for doc in documents(REPO / path) if doc.get("kind") == kind]
    assert len(matches) == 1, f"{path}: expected one {kind}, found {len(matches)}"
    return matches[0]


def pinned_ray_version() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [re.fullmatch(r"ray\[[^\]]*\]==([\d.]+)", dep) for dep in dependencies]
    return next(pin.group(1) for pin in pins if pin)


# ------------------------------------------------------------------------------------------------ parsing
def test_the_deployment_files_are_all_found():
    names = {rel(path) for path in MANIFESTS}
    expected = {"infra/k8s/raycluster.yaml", "infra/k8s/rayjob-train.yaml", "infra/k8s/cronjob-retrain.yaml",
                "infra/k8s/raycronjob-retrain.yaml", "infra/k8s/secret-example.yaml", "ray_cluster.yaml"}
    assert expected <= names
    assert {path.name for path in DOCKERFILES} == {"Dockerfile", "Dockerfile.cpu"}


@pytest.mark.parametrize("path", MANIFESTS, ids=rel)
def test_manifest_parses(path):
    docs = documents(path)
    assert docs, f"{rel(path)} holds no YAML document"
    assert all(isinstance(doc, dict) for doc in docs), f"{rel(path)}: every document must be a mapping"


@pytest.mark.parametrize("path", KUBE_MANIFESTS, ids=rel)
def test_kubernetes_objects_have_kind_version_and_name(path):
    for doc in documents(path):
        metadata = doc.get("metadata", {})
        assert doc.get("apiVersion") and doc.get("kind") and (metadata.get("name") or metadata.get("generateName")), doc


# ------------------------------------------------------------------------------------------------ KubeRay
def test_kuberay_objects_are_ray_io_v1():
    assert kube_object("infra/k8s/raycluster.yaml", "RayCluster")["apiVersion"] == "ray.io/v1"
    assert kube_object("infra/k8s/rayjob-train.yaml", "RayJob")["apiVersion"] == "ray.io/v1"
    for path in KUBE_MANIFESTS:
        for doc in documents(path):
            if doc["apiVersion"].startswith("ray.io/"):
                assert doc["apiVersion"] == "ray.io/v1", f"{rel(path)}: {doc['kind']} {doc['apiVersion']}"


def retrain_rayjob_specs() -> dict[str, dict[str, Any]]:
    """The RayJob spec of the scheduled retrain, both ways: created by the CronJob, templated by the RayCronJob."""
    return {"infra/k8s/cronjob-retrain.yaml": kube_object("infra/k8s/cronjob-retrain.yaml", "RayJob")["spec"],
            "infra/k8s/raycronjob-retrain.yaml": kube_object("infra/k8s/raycronjob-retrain.yaml",
                                                             "RayCronJob")["spec"]["jobTemplate"]}


def test_rayjob_creates_and_deletes_its_own_cluster():
    specs = [kube_object("infra/k8s/rayjob-train.yaml", "RayJob")["spec"], *retrain_rayjob_specs().values()]
    for spec in specs:
        assert spec["shutdownAfterJobFinishes"] is True
        assert spec["rayClusterSpec"]["headGroupSpec"] and spec["rayClusterSpec"]["workerGroupSpecs"]


def test_ray_version_matches_the_project_pin():
    version = pinned_ray_version()
    cluster = kube_object("infra/k8s/raycluster.yaml", "RayCluster")["spec"]
    job_cluster = kube_object("infra/k8s/rayjob-train.yaml", "RayJob")["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == job_cluster["rayVersion"] == version
    assert {spec["rayClusterSpec"]["rayVersion"] for spec in retrain_rayjob_specs().values()} == {version}


def test_every_image_is_the_project_image():
    """One placeholder image everywhere, so that one substitution deploys one build."""
    images = [node["image"] for path in KUBE_MANIFESTS for doc in documents(path) for node in walk(doc)
              if isinstance(node, dict) and isinstance(node.get("image"), str)]
    images.append(documents(CLUSTER_LAUNCHER)[0]["docker"]["image"])
    ours = [image for image in images if not KUBECTL_IMAGE.fullmatch(image)]
    assert len(ours) > len(images) - 2 and all(image.startswith(IMAGE_PREFIX) for image in ours), images


def test_env_sources_exist():
    """Every Secret and ConfigMap the pods read from is defined in secret-example.yaml."""
    defined = {(doc["kind"], doc["metadata"]["name"]) for doc in documents(INFRA / "k8s" / "secret-example.yaml")}
    referenced = set()
    for path in KUBE_MANIFESTS:
        for node in (n for doc in documents(path) for n in walk(doc) if isinstance(n, dict)):
            if "secretRef" in node:
                referenced.add(("Secret", node["secretRef"]["name"]))
            if "configMapRef" in node:
                referenced.add(("ConfigMap", node["configMapRef"]["name"]))
    assert referenced and referenced <= defined, referenced - defined


def cluster_gpus(cluster_spec: dict[str, Any]) -> int:
    """The most GPUs a RayCluster spec can offer: per worker group, max replicas x GPUs per pod."""
    total = 0
    for group in cluster_spec["workerGroupSpecs"]:
        pods = max(group.get("replicas", 0), group.get("maxReplicas", 0))
        per_pod = sum(int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
                      for container in group["template"]["spec"]["containers"])
        total += pods * per_pod
    return total


def test_scheduled_retrain_is_the_same_rayjob_both_ways():
    """The CronJob's pod creates the RayJob carried by the ConfigMap it mounts, with a service account allowed to;
    the RayCronJob templates the very same RayJob spec; both run retrain.py with --exit-zero."""
    path = "infra/k8s/cronjob-retrain.yaml"
    pod = kube_object(path, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    mount = next(m for m in container["volumeMounts"] if container["command"][3].startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = kube_object(path, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert Path(container["command"][3]).name in config_map["data"]
    assert kube_object(path, "RayJob")["metadata"]["generateName"]  # a new RayJob every week
    role, binding = kube_object(path, "Role"), kube_object(path, "RoleBinding")
    assert {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list"]} in role["rules"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"] == kube_object(path, "ServiceAccount")["metadata"]["name"]
    specs = retrain_rayjob_specs()
    assert specs[path] == specs["infra/k8s/raycronjob-retrain.yaml"]
    assert re.fullmatch(r"(\S+ ){4}\S+", kube_object("infra/k8s/raycronjob-retrain.yaml", "RayCronJob")["spec"]["schedule"])
    entry = specs[path]["entrypoint"].split()
    assert entry[:2] == ["python", "pipeline/retrain.py"] and "--exit-zero" in entry


@pytest.mark.parametrize("inv", [inv for inv in TRAIN_INVOCATIONS + RETRAIN_INVOCATIONS
                                 if inv.file.startswith("infra/k8s/")], ids=str)
def test_gpu_training_fits_its_cluster(inv):
    """A job asking for more GPU workers than its cluster can ever hold waits forever."""
    config = config_of(inv)
    if inv.file == "infra/k8s/rayjob-train.yaml":
        cluster_spec = kube_object(inv.file, "RayJob")["spec"]["rayClusterSpec"]
    elif inv.script == "pipeline/retrain.py":
        cluster_spec = retrain_rayjob_specs()[inv.file]["rayClusterSpec"]
    else:
        cluster_spec = kube_object("infra/k8s/raycluster.yaml", "RayCluster")["spec"]
    if config.ray.use_gpu:
        assert cluster_gpus(cluster_spec) >= config.ray.num_workers


# ----------------------------------------------------------------------------------- pipeline commands
def test_train_commands_are_found_in_every_deployment():
    assert {inv.file for inv in TRAIN_INVOCATIONS} >= {"infra/k8s/rayjob-train.yaml", "ray_cluster.yaml"}
    assert {inv.file for inv in RETRAIN_INVOCATIONS} >= {"infra/k8s/cronjob-retrain.yaml",
                                                         "infra/k8s/raycronjob-retrain.yaml"}


@pytest.mark.parametrize("inv", INVOCATIONS, ids=str)
def test_pipeline_command_names_existing_script_and_config(inv):
    assert (REPO / inv.script).is_file(), f"{inv}: no such script"
    configs = [inv.args[i + 1] for i, arg in enumerate(inv.args[:-1]) if arg == "--config"]
    configs += [arg.split("=", 1)[1] for arg in inv.args if arg.startswith("--config=")]
    for config in configs:
        assert Path(config).parent == Path("pipeline/configs"), f"{inv}: configs live in pipeline/configs/"
        assert (REPO / config).is_file(), f"{inv}: no such config"


@pytest.mark.parametrize("inv", TRAIN_INVOCATIONS + RETRAIN_INVOCATIONS, ids=str)
def test_train_overrides_are_valid_config_keys(inv):
    config = config_of(inv)  # raises ConfigError for an unknown key or a wrongly typed value
    assert config.run.storage_path and config.run.storage_path.startswith("s3://")
    assert config.data.uri and config.data.uri.startswith("s3://")


# ------------------------------------------------------------------------------------ ray_cluster.yaml
def test_ray_cluster_yaml_passes_rays_own_validation():
    """What `ray up` checks before it contacts AWS: defaults merged (the public ``ray.autoscaler.sdk``), then the
    launcher's JSON schema (``ray-schema.json``, shipped with Ray), and the head node type exists."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler.sdk import fillout_defaults

    config = fillout_defaults(copy.deepcopy(documents(CLUSTER_LAUNCHER)[0]))
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]


def test_ray_cluster_yaml_is_a_gpu_cluster_on_aws():
    config = documents(CLUSTER_LAUNCHER)[0]
    assert config["provider"]["type"] == "aws"
    workers = [node for name, node in config["available_node_types"].items() if name != config["head_node_type"]]
    assert [(w["min_workers"], w["max_workers"]) for w in workers] == [(0, 8)]
    assert "--gpus all" in config["docker"]["worker_run_options"]
    assert any("ray start --head" in cmd for cmd in config["head_start_ray_commands"])
    assert any("ray start --address" in cmd for cmd in config["worker_start_ray_commands"])


# ------------------------------------------------------------------------------------------------ secrets
def test_no_aws_access_key_anywhere():
    for path in [*(p for p in INFRA.rglob("*") if p.is_file()), CLUSTER_LAUNCHER]:
        match = AWS_ACCESS_KEY.search(path.read_text(errors="replace"))
        assert match is None, f"{rel(path)} contains what looks like an AWS access key"


def test_secrets_hold_placeholders_only():
    secrets = [(path, doc) for path in KUBE_MANIFESTS for doc in documents(path) if doc["kind"] == "Secret"]
    assert secrets
    for path, secret in secrets:
        assert "data" not in secret, f"{rel(path)}: use stringData with placeholders, not base64 data"
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in str(value), f"{rel(path)}: {key} is not a placeholder"


# -------------------------------------------------------------------------------------------- Dockerfiles
def dockerfile_text(path: Path) -> str:
    """The Dockerfile with continuation lines joined and ARG defaults substituted."""
    text = path.read_text().replace("\\\n", " ")
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    for name, value in defaults.items():
        text = text.replace("${%s}" % name, value).replace(f"${name}", value)
    return text


def instructions(path: Path, keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in dockerfile_text(path).splitlines()
            if line.split(None, 1)[:1] == [keyword] and len(line.split(None, 1)) == 2]


@pytest.mark.parametrize("path", DOCKERFILES, ids=rel)
def test_dockerfile_pins_torch_first_then_installs_the_project(path):
    torch_pin = re.search(r"TORCH_PIN \?= torch==([\d.]+)", (REPO / "Makefile").read_text()).group(1)
    runs = instructions(path, "RUN")
    torch_at = [i for i, run in enumerate(runs) if re.search(rf"pip install \S*torch=={re.escape(torch_pin)}\+\w+", run)]
    project_at = [i for i, run in enumerate(runs) if re.search(r"pip install (?:-\S+ )*\.(?:\s|$)", run)]
    assert torch_at, f"{rel(path)}: no pinned `pip install torch=={torch_pin}+<build>`"
    assert project_at, f"{rel(path)}: the project is not installed with `pip install .`"
    assert torch_at[0] < project_at[0], f"{rel(path)}: torch must be installed before the project"


@pytest.mark.parametrize("path", DOCKERFILES, ids=rel)
def test_dockerfile_uses_python_311_and_a_non_root_user(path):
    text = dockerfile_text(path)
    assert re.search(r"^FROM python:3\.11\b|python3\.11 -m venv", text, flags=re.M), rel(path)
    users = instructions(path, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{rel(path)}: runs as root"


@pytest.mark.parametrize("path", DOCKERFILES, ids=rel)
def test_dockerfile_copies_paths_that_exist(path):
    copies = [shlex.split(copy_) for copy_ in instructions(path, "COPY")]
    sources = [src for words in copies if not any(w.startswith("--from") for w in words)
               for src in [w for w in words if not w.startswith("--")][:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{rel(path)}: COPY {source} does not exist in the repository"


def test_gpu_image_cuda_matches_the_torch_build():
    text = dockerfile_text(INFRA / "docker" / "Dockerfile")
    base = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-runtime-\S+$", text, flags=re.M)
    wheel = re.search(r"torch==[\d.]+\+cu(\d+)", text)
    assert base and wheel, "expected a CUDA runtime base image and a +cuXYZ torch build"
    assert wheel.group(1) == base.group(1) + base.group(2)
    assert f"whl/cu{wheel.group(1)}" in text, "torch must come from the index of the same CUDA build"
