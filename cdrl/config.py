"""Typed configuration: one object drives the library, the pipeline and Tune.

Loaded from YAML, then ``key=value`` overrides with dotted keys (``train.batch_size=256``). Unknown keys
and wrongly typed values raise :class:`ConfigError` naming the key.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the dotted key."""


@dataclass
class RunConfig:
    name: str = "toy"
    seed: int = 0
    output_dir: str = "runs"  # local folder for samples, plots and the summary: OUTPUT_DIR/NAME/
    storage_path: str | None = None  # checkpoints: a folder or s3://bucket/prefix (None: OUTPUT_DIR/NAME/checkpoints)
    keep_checkpoints: int = 3  # keep the last K checkpoints


@dataclass
class DataConfig:
    name: str = "8squares"  # a built-in dataset (cdrl.data.BUILTIN_DATASETS)
    uri: str | None = None  # prepared Parquet shards (local folder or s3://); prepared from `name` if missing
    num_points: int = 50_000  # size of the fixed training set for generated data
    horizontal_flip: bool = False  # random left-right flip of each image batch (official CIFAR-10 / ImageNet32, §11)


@dataclass
class ScheduleConfig:
    """§1 and §14. ``family``: "cosine" (the paper's), "linear" (in logSNR) or "drl" (ignores the logSNR range)."""

    num_levels: int = 6
    logsnr_min: float = -5.1
    logsnr_max: float = 9.8
    family: Literal["cosine", "linear", "drl"] = "cosine"


@dataclass
class EnergyNetConfig:
    """§5.2 (toy MLP, ``channel_mult`` = width multipliers) and §5.4 (image ResNet)."""

    base_channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    blocks_per_resolution: int = 8  # image net only; the toy MLP has one block per width
    temb_dim: int = 128
    temb_hidden: int = 512
    spectral_norm: bool = True


@dataclass
class InitializerConfig:
    """§5.3 (toy residual MLP: ``base_channels`` = hidden width) and §5.5 (image UNet)."""

    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 1, 1])
    num_res_blocks: int = 3
    attention_resolutions: list[int] = field(default_factory=lambda: [16, 8])
    dropout: float = 0.1
    temb_dim: int = 64
    temb_hidden: int = 256
    groups: int = 32


@dataclass
class ModelConfig:
    energy_net: EnergyNetConfig = field(default_factory=EnergyNetConfig)
    initializer: InitializerConfig = field(default_factory=InitializerConfig)
    num_classes: int = 0  # > 0: class-conditional nets with a null label for guidance (§8)


@dataclass
class LangevinConfig:
    """§3. ``step_rule`` picks κ_t: "toy" = 1/σ̄_0, "image" = σ̄_{t-1}/σ̄_0."""

    num_steps: int = 15
    step_rule: Literal["toy", "image"] = "image"
    c0: float = 2e-4
    step_multiplier: float = 1.0  # sz_mul: scales the step without changing the target density


@dataclass
class TrainConfig:
    iterations: int = 1000
    batch_size: int = 256  # global batch (split across data-parallel workers)
    energy_lr: float = 1e-4
    energy_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    energy_warmup: int = 10_000  # lr·min(1, k/warmup); the first update has lr 0 (§6)
    initializer_lr: float = 1e-5
    initializer_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    initializer_warmup: int = 10_000
    initializer_warmup_offset: int = 500  # lr·min(1, (k+offset)/warmup) (§4)
    lr_decay: Literal["constant", "cosine"] = "constant"  # cosine: after the warm-ups, down to the last iteration
    lr_final_scale: float = 0.1  # cosine: the learning rates at the last iteration, as a multiple of *_lr
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    zero_grad: bool = True  # False reproduces the official toy's missing zero_grad (§12.1)
    label_dropout: float = 0.1  # p_cond for class-conditional training (§8)
    log_every: int = 100
    checkpoint_every: int = 0  # 0: checkpoint only at the end
    time_budget_s: float = 0.0  # > 0: stop early (and checkpoint) once this much training time has passed


@dataclass
class GenerationConfig:
    """§7. ``tweedie``: "faithful" divides by c0·κ_1·σ_1² (the official 2× score), "consistent" by s_1²."""

    steps_per_level: int | None = None  # None: langevin.num_steps
    tweedie: Literal["none", "faithful", "consistent"] = "faithful"
    guidance_weight: float = 0.0
    batch_size: int = 2500
    final_step_noise: bool = True  # False: the last Langevin step of each chain is noise-free (a gradient step)


@dataclass
class EvalConfig:
    """Evaluation during training and by pipeline/evaluate.py: one protocol (fixed seed, fixed N, §9).

    Images get ``fid/EXTRACTOR_N`` against the dataset version's reference statistics; 2-D toys the toy
    metrics. ``extractor`` "auto": ``digits`` for 8×8 digits, ``inception`` for other images; "none": no FID.
    """

    every: int = 0  # evaluate every this many training steps; 0: only at the end
    num_samples: int = 10_000  # N: samples generated per evaluation (split across workers)
    seed: int = 0  # seed of the evaluation's sampling noise (independent of the worker count)
    extractor: Literal["auto", "inception", "digits", "none"] = "auto"
    inception_weights: str | None = None  # FID weights file; None: $CDRL_INCEPTION_WEIGHTS, else the torch hub cache
    plot: bool = True


@dataclass
class RayConfig:
    """Ray Train scaling and fault tolerance (used by the pipeline; the library ignores it)."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 2  # a lost worker costs at most one checkpoint interval, this many times
    inject_crash_at_step: int = 0  # > 0: testing aid, a worker dies once at this step
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"  # STRICT_SPREAD: one worker per node


@dataclass
class TrackingConfig:
    """MLflow. ``uri`` None: $MLFLOW_TRACKING_URI, else a sqlite file under run.output_dir."""

    uri: str | None = None
    experiment: str = "cdrl"
    enabled: bool = True


Method = Literal["cdrl", "drl", "mcmc", "learned_sampler", "exact_sm", "sliced_sm", "dsm", "multiscale_dsm"]


@dataclass
class MCMCConfig:
    """Maximum likelihood with SGLD negatives (method: mcmc). Chains run on the energy net at the cleanest level.

    x ← x + step_size·∇F(x) + noise_std·ξ (Du & Mordatch 2019 decouple the two); with ``mala`` the step is the
    Metropolis-adjusted Langevin proposal x + step_size·∇F + sqrt(2·step_size)·ξ with an accept/reject test.
    """

    persistent: bool = True  # True: chains start from a replay buffer; False: short-run chains from noise
    buffer_size: int = 10_000  # per worker
    reinit_prob: float = 0.05  # chance that a buffer chain restarts from noise
    num_steps: int = 20  # SGLD steps per training iteration
    step_size: float = 0.1
    noise_std: float = 0.01
    mala: bool = False
    energy_reg: float = 0.1  # α·(F(x⁺)² + F(x⁻)²) keeps the energies near 0 (Du & Mordatch 2019)
    init_range: float = 1.0  # chains from noise start uniform in [-init_range, init_range]^d
    sample_steps: int = 100  # SGLD steps from noise when sampling for evaluation


@dataclass
class LearnedSamplerConfig:
    """A generator x = g(z) + σ·ε trained against the EBM with an entropy term (method: learned_sampler)."""

    latent_dim: int = 16
    hidden: int = 128
    output_std: float = 0.1  # σ, fixed
    entropy_weight: float = 1.0
    energy_reg: float = 0.1


@dataclass
class ScoreMatchingConfig:
    """Score matching of ∇ₓF (methods: exact_sm, sliced_sm, dsm, multiscale_dsm) and Langevin sampling."""

    noise_std: float = 0.1  # dsm: σ of the perturbation
    num_projections: int = 1  # sliced_sm: Rademacher vectors per example
    sigma_max: float = 10.0  # multiscale_dsm: geometric noise levels σ_max … σ_min
    sigma_min: float = 0.01
    num_scales: int = 10
    sample_step_size: float = 1e-3  # Langevin step ε (annealed: ε·σ_i²/σ_min²) for sampling
    sample_steps: int = 100  # single-scale methods: Langevin steps from noise when sampling
    init_range: float = 1.0  # single-scale sampling starts uniform in [-init_range, init_range]^d


@dataclass
class RegistryConfig:
    """MLflow model registry: a finished tracked run registers one model version (a sampling pyfunc)."""

    enabled: bool = True
    model_name: str | None = None  # None: "cdrl-" + data.name


@dataclass
class RetrainConfig:
    """``pipeline/retrain.py``: warm-start from the champion, evaluate with a fixed protocol, promote if better."""

    min_improvement: float = 0.0  # the challenger must beat the champion's primary metric by at least this much
    warm_start: bool = True  # start from the champion's weights (False: from scratch)
    iterations: int = 0  # training steps of a warm-started retrain (0: train.iterations)
    eval_num_samples: int = 0  # N of the fixed protocol both models are scored with (0: eval.num_samples; seed: eval.seed)


@dataclass
class TuneConfig:
    """Ray Tune trials (tune/search.py): each trial evaluates every ``eval_every_s`` seconds of training
    (at the first step past each multiple), so trials are compared at the same training times."""

    eval_every_s: float = 0.0  # 0: no time-based evaluation


@dataclass
class PerfConfig:
    """Speed switches that leave results unchanged within tolerance (cdrl/perf.py, BENCHMARKS.md §Performance).

    "auto" picks the measured default for the device: on CUDA every switch is on; on the CPU bf16 autocast
    is on where the CPU has native bf16 dot products (AVX512-BF16 / AMX), the rest off. The other switches
    take true/false (YAML's on/off too). ``threads`` 0 keeps torch's choice (one per core).
    """

    autocast: Literal["auto", "bf16", "fp32"] = "auto"  # bf16 matmuls/convs; fp32 energies, Langevin state, grads
    channels_last: Literal["auto", True, False] = "auto"  # NHWC image nets (CUDA tensor cores)
    compile: Literal["auto", True, False] = "auto"  # torch.compile of the energy net's y ↦ F(y) (+ its backward)
    cuda_graphs: Literal["auto", True, False] = "auto"  # CUDA graphs for the fixed-shape Langevin step (CUDA only)
    fused_optimizer: Literal["auto", True, False] = "auto"  # one fused Adam/AdamW kernel per network
    threads: int = 0  # torch intra-op threads per process (0: torch's default)


@dataclass
class HealthConfig:
    """Training health guard: catches a diverging EBM (non-finite or exploding values) before it is saved.

    A step whose energies, gradient norms (before clipping) or Langevin displacements (per level) are
    non-finite or above the limits is skipped (no optimizer or EMA update). ``skip_limit`` bad steps in a
    row roll back to the last good checkpoint with the learning rates times ``lr_scale`` and a new seed;
    more than ``max_rollbacks`` rollbacks stop the run with an error.
    """

    enabled: bool = True
    max_abs_energy: float = 1e6
    max_grad_norm: float = 1e6
    max_langevin_displacement: float = 1e4
    skip_limit: int = 3
    max_rollbacks: int = 3
    lr_scale: float = 0.5


@dataclass
class FaultConfig:
    """How long the pipeline rides out an infrastructure outage before it gives up with one clear line."""

    storage_wait_s: float = 600.0  # checkpoint uploads retry with backoff this long while S3 is unreachable
    tracking_buffer: int = 200_000  # metrics kept in memory while MLflow is unreachable (then written to a file)
    tracking_flush_s: float = 300.0  # at the end, wait this long for MLflow to take the buffered metrics


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    langevin: LangevinConfig = field(default_factory=LangevinConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    # ---- training methods (cdrl/objectives/): the method and its own settings
    method: Method = "cdrl"
    mcmc: MCMCConfig = field(default_factory=MCMCConfig)
    learned_sampler: LearnedSamplerConfig = field(default_factory=LearnedSamplerConfig)
    score_matching: ScoreMatchingConfig = field(default_factory=ScoreMatchingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(annotation, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in known:
            raise ConfigError(f"unknown config key {key!r} (known under {prefix or 'top level'}: {', '.join(sorted(known))})")
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.batch_size=256", "run.name=x"]`` → nested dict, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def config_from_dict(values: dict[str, Any]) -> Config:
    config = _build(Config, values, "")
    validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ← YAML file ← overrides. Raises ConfigError naming the file or key."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        values = loaded
    values = _deep_merge(values, parse_overrides(overrides or []))
    return config_from_dict(values)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → {"train.batch_size": 256, ...} (for MLflow params and Tune spaces)."""
    flat: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            flat.update(flatten(v, key))
        else:
            flat[key] = v
    return flat


def validate(config: Config) -> None:
    """Range checks that a type cannot express; each error names its key, value and the rule."""
    t, lv, sc = config.train, config.langevin, config.schedule
    rules = [
        ("train.iterations", t.iterations, t.iterations >= 0, ">= 0"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, ">= 1"),
        ("train.energy_lr", t.energy_lr, t.energy_lr > 0, "> 0"),
        ("train.initializer_lr", t.initializer_lr, t.initializer_lr > 0, "> 0"),
        ("train.grad_clip", t.grad_clip, t.grad_clip > 0, "> 0"),
        ("train.lr_final_scale", t.lr_final_scale, 0 <= t.lr_final_scale <= 1, "in [0, 1]"),
        ("train.ema_decay", t.ema_decay, 0 <= t.ema_decay < 1, "in [0, 1)"),
        ("train.label_dropout", t.label_dropout, 0 <= t.label_dropout < 1, "in [0, 1)"),
        ("train.energy_warmup", t.energy_warmup, t.energy_warmup >= 1, ">= 1"),
        ("train.initializer_warmup", t.initializer_warmup, t.initializer_warmup >= 1, ">= 1"),
        ("langevin.num_steps", lv.num_steps, lv.num_steps >= 0, ">= 0"),
        ("langevin.c0", lv.c0, lv.c0 > 0, "> 0"),
        ("langevin.step_multiplier", lv.step_multiplier, lv.step_multiplier > 0, "> 0"),
        ("schedule.num_levels", sc.num_levels, sc.num_levels >= 1, ">= 1"),
        ("schedule.num_levels", sc.num_levels, sc.family != "drl" or 2 <= sc.num_levels <= 501, "in [2, 501] for family drl"),
        ("schedule.logsnr_max", sc.logsnr_max, sc.logsnr_max > sc.logsnr_min, "> schedule.logsnr_min"),
        ("data.num_points", config.data.num_points, config.data.num_points >= 1, ">= 1"),
        ("eval.num_samples", config.eval.num_samples, config.eval.num_samples >= 2, ">= 2"),
        ("eval.every", config.eval.every, config.eval.every >= 0, ">= 0 (0: only at the end)"),
        ("model.num_classes", config.model.num_classes, config.model.num_classes >= 0, ">= 0"),
        ("ray.num_workers", config.ray.num_workers, config.ray.num_workers >= 1, ">= 1"),
        ("ray.cpus_per_worker", config.ray.cpus_per_worker, config.ray.cpus_per_worker > 0, "> 0"),
        ("ray.max_failures", config.ray.max_failures, config.ray.max_failures >= -1, ">= -1 (-1: unlimited)"),
        ("tune.eval_every_s", config.tune.eval_every_s, config.tune.eval_every_s >= 0, ">= 0"),
        ("perf.threads", config.perf.threads, config.perf.threads >= 0, ">= 0 (0: torch's default)"),
        ("run.keep_checkpoints", config.run.keep_checkpoints, config.run.keep_checkpoints >= 1, ">= 1"),
        ("run.name", config.run.name, bool(config.run.name) and "/" not in config.run.name, "non-empty, no '/'"),
        ("registry.model_name", config.registry.model_name,
         config.registry.model_name is None or bool(re.fullmatch(r"[\w.-]+", config.registry.model_name)),
         "None or letters, digits, '_', '.', '-'"),
        ("retrain.min_improvement", config.retrain.min_improvement, config.retrain.min_improvement >= 0, ">= 0"),
        ("retrain.iterations", config.retrain.iterations, config.retrain.iterations >= 0, ">= 0"),
        ("retrain.eval_num_samples", config.retrain.eval_num_samples, config.retrain.eval_num_samples >= 0, ">= 0"),
    ]
    for key, value, ok, rule in rules + input_rules(config) + method_rules(config):
        if not ok:
            raise ConfigError(f"{key}: {value!r} is invalid (must be {rule})")


def _credentials_in_uri(uri: str | None) -> bool:
    """``scheme://user:password@host`` or a query string: credentials belong in the environment, not the config."""
    if not uri or "://" not in uri:
        return False
    authority = uri.split("://", 1)[1].split("/", 1)[0]
    return "@" in authority or "?" in uri


def input_rules(config: Config) -> list[tuple[str, Any, bool, str]]:
    """Every remaining value checked before anything runs (key, value, ok, rule)."""
    t, gen, en, ini, h, f = (config.train, config.generation, config.model.energy_net, config.model.initializer,
                             config.health, config.faults)
    init_widths = [ini.base_channels * m for m in ini.channel_mult]
    rules = [
        ("train.log_every", t.log_every, t.log_every >= 1, ">= 1"),
        ("train.checkpoint_every", t.checkpoint_every, t.checkpoint_every >= 0, ">= 0 (0: only at the end)"),
        ("train.time_budget_s", t.time_budget_s, t.time_budget_s >= 0, ">= 0 (0: none)"),
        ("train.initializer_warmup_offset", t.initializer_warmup_offset, t.initializer_warmup_offset >= 0, ">= 0"),
        ("train.energy_betas", t.energy_betas, len(t.energy_betas) == 2 and all(0 <= b < 1 for b in t.energy_betas),
         "two numbers in [0, 1)"),
        ("train.initializer_betas", t.initializer_betas,
         len(t.initializer_betas) == 2 and all(0 <= b < 1 for b in t.initializer_betas), "two numbers in [0, 1)"),
        ("generation.batch_size", gen.batch_size, gen.batch_size >= 1, ">= 1"),
        ("generation.steps_per_level", gen.steps_per_level, gen.steps_per_level is None or gen.steps_per_level >= 0,
         ">= 0 or null"),
        ("generation.guidance_weight", gen.guidance_weight, gen.guidance_weight >= 0, ">= 0"),
        ("model.energy_net.base_channels", en.base_channels, en.base_channels >= 1, ">= 1"),
        ("model.energy_net.channel_mult", en.channel_mult, bool(en.channel_mult) and min(en.channel_mult) >= 1,
         "a non-empty list of integers >= 1"),
        ("model.energy_net.blocks_per_resolution", en.blocks_per_resolution, en.blocks_per_resolution >= 1, ">= 1"),
        ("model.energy_net.temb_dim", en.temb_dim, en.temb_dim >= 4 and en.temb_dim % 2 == 0,
         "even and >= 4 (half sines, half cosines, §5.1)"),
        ("model.energy_net.temb_hidden", en.temb_hidden, en.temb_hidden >= 1, ">= 1"),
        ("model.initializer.base_channels", ini.base_channels, ini.base_channels >= 1, ">= 1"),
        ("model.initializer.channel_mult", ini.channel_mult, bool(ini.channel_mult) and min(ini.channel_mult) >= 1,
         "a non-empty list of integers >= 1"),
        ("model.initializer.num_res_blocks", ini.num_res_blocks, ini.num_res_blocks >= 1, ">= 1"),
        ("model.initializer.attention_resolutions", ini.attention_resolutions,
         all(r >= 1 for r in ini.attention_resolutions), "image sizes >= 1"),
        ("model.initializer.dropout", ini.dropout, 0 <= ini.dropout < 1, "in [0, 1)"),
        ("model.initializer.temb_dim", ini.temb_dim, ini.temb_dim >= 4 and ini.temb_dim % 2 == 0,
         "even and >= 4 (half sines, half cosines, §5.1)"),
        ("model.initializer.temb_hidden", ini.temb_hidden, ini.temb_hidden >= 1, ">= 1"),
        ("model.initializer.groups", ini.groups, ini.groups >= 1 and all(w % ini.groups == 0 for w in init_widths),
         f"a divisor of every GroupNorm width {init_widths} (base_channels × channel_mult)"),
        ("ray.inject_crash_at_step", config.ray.inject_crash_at_step, config.ray.inject_crash_at_step >= 0, ">= 0"),
        ("tracking.experiment", config.tracking.experiment, bool(config.tracking.experiment.strip()), "non-empty"),
        ("run.output_dir", config.run.output_dir, "://" not in config.run.output_dir,
         "a local folder (checkpoints may go to s3:// via run.storage_path)"),
        ("health.max_abs_energy", h.max_abs_energy, h.max_abs_energy > 0, "> 0"),
        ("health.max_grad_norm", h.max_grad_norm, h.max_grad_norm > 0, "> 0"),
        ("health.max_langevin_displacement", h.max_langevin_displacement, h.max_langevin_displacement > 0, "> 0"),
        ("health.skip_limit", h.skip_limit, h.skip_limit >= 1, ">= 1"),
        ("health.max_rollbacks", h.max_rollbacks, h.max_rollbacks >= 0, ">= 0"),
        ("health.lr_scale", h.lr_scale, 0 < h.lr_scale <= 1, "in (0, 1]"),
        ("faults.storage_wait_s", f.storage_wait_s, f.storage_wait_s >= 0, ">= 0"),
        ("faults.tracking_buffer", f.tracking_buffer, f.tracking_buffer >= 1, ">= 1"),
        ("faults.tracking_flush_s", f.tracking_flush_s, f.tracking_flush_s >= 0, ">= 0"),
    ]
    for key in ("data.uri", "run.storage_path", "tracking.uri"):
        section, name = key.split(".")
        uri = getattr(getattr(config, section), name)
        if _credentials_in_uri(uri):  # the value is not echoed: it may hold a secret
            raise ConfigError(f"{key}: credentials or query strings in URIs are refused; pass them in the "
                              "environment (AWS_*, MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN) or the cloud's identity")
    return rules


def method_rules(config: Config) -> list[tuple[str, Any, bool, str]]:
    """Range checks of the ``method`` key and the per-method sections."""
    m, ls, sm = config.mcmc, config.learned_sampler, config.score_matching
    conditional = config.model.num_classes == 0 or config.method in ("cdrl", "drl")
    return [
        ("method", config.method, conditional, "cdrl or drl when model.num_classes > 0"),
        ("mcmc.buffer_size", m.buffer_size, m.buffer_size >= 1, ">= 1"),
        ("mcmc.reinit_prob", m.reinit_prob, 0 <= m.reinit_prob <= 1, "in [0, 1]"),
        ("mcmc.num_steps", m.num_steps, m.num_steps >= 1, ">= 1"),
        ("mcmc.step_size", m.step_size, m.step_size > 0, "> 0"),
        ("mcmc.noise_std", m.noise_std, m.noise_std >= 0, ">= 0"),
        ("mcmc.init_range", m.init_range, m.init_range > 0, "> 0"),
        ("mcmc.sample_steps", m.sample_steps, m.sample_steps >= 1, ">= 1"),
        ("learned_sampler.latent_dim", ls.latent_dim, ls.latent_dim >= 1, ">= 1"),
        ("learned_sampler.hidden", ls.hidden, ls.hidden >= 1, ">= 1"),
        ("learned_sampler.output_std", ls.output_std, ls.output_std > 0, "> 0"),
        ("learned_sampler.entropy_weight", ls.entropy_weight, ls.entropy_weight >= 0, ">= 0"),
        ("score_matching.noise_std", sm.noise_std, sm.noise_std > 0, "> 0"),
        ("score_matching.num_projections", sm.num_projections, sm.num_projections >= 1, ">= 1"),
        ("score_matching.sigma_min", sm.sigma_min, 0 < sm.sigma_min < sm.sigma_max, "in (0, score_matching.sigma_max)"),
        ("score_matching.num_scales", sm.num_scales, sm.num_scales >= 1, ">= 1"),
        ("score_matching.sample_step_size", sm.sample_step_size, sm.sample_step_size > 0, "> 0"),
        ("score_matching.sample_steps", sm.sample_steps, sm.sample_steps >= 1, ">= 1"),
        ("score_matching.init_range", sm.init_range, sm.init_range > 0, "> 0"),
    ]
