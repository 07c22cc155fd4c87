"""The paper's downstream tasks, measured (§8): composition and the sampling budget on the toy; guidance,
inpainting, OOD detection and the sampling budget on 8×8 digits.

    python benchmarks/downstream.py --task toy --budget-s 300      # attribute toy: composition, steps per level
    python benchmarks/downstream.py --task digits --budget-s 600   # guidance, inpainting, OOD, steps per level

toy: CDRL (toy.yaml, ``model.num_classes=4``) trains on the attribute 8-squares toy (each point labelled once
"left"/"right" and once "bottom"/"top", cdrl.data.toy2d.eight_squares_with_attributes), then samples
unconditionally, per attribute, composed ("left" AND "top": F_∅ + Σ_j (F_cj − F_∅)) and negated ("left" AND
NOT "top": weights +1, −1), reporting the fraction of samples in each quadrant's squares; then the
unconditional (null-label) model's toy metrics for 1, 2, 4, 8, 15 Langevin steps per level and with a
noise-free final step. digits: conditional CDRL (digits.yaml, ``model.num_classes=10``) trains, then class
accuracy (the digits classifier) and digits-FID of class-conditional samples for guidance w ∈ {0, 0.5, 1, 2,
4} (plotted); inpainting of held-out digits with the lower half masked (accuracy of the completed digits
against their labels; observed pixels checked unchanged); OOD AUROC (cdrl.metrics.ood); digits-FID and
samples/s against steps per level. Training runs pipeline/loop.py in this process for ``--budget-s`` seconds
of training time. Everything is logged to one MLflow run (experiment ``downstream``), JSON and plots written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository root, not benchmarks/

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import format_table, machine_info, save_report, setup_torch, utc_timestamp, warn_if_busy  # noqa: E402
from cdrl.config import flatten, load_config  # noqa: E402
from cdrl.generation import Conditioning, Inpainting, generate_in_batches, generate  # noqa: E402
from pipeline.cli import REPO_ROOT, run_main  # noqa: E402
from pipeline.loop import LoopHooks, TrainingData, WorkerContext, run_training  # noqa: E402

CONFIGS = REPO_ROOT / "pipeline" / "configs"
GUIDANCE_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
STEPS = (1, 2, 4, 8, 15)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/downstream.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["toy", "digits"], required=True)
    parser.add_argument("--budget-s", type=float, default=300.0, help="training seconds (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per measured setting (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/benchmarks/downstream", help="plots, MLflow store (default: %(default)s)")
    parser.add_argument("--tracking-uri", help="MLflow (default: sqlite under --output-dir)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", metavar="OUT", help="default: benchmarks/results/downstream_TASK.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser.parse_intermixed_args(argv)


def train(config, data: TrainingData):
    start = time.perf_counter()
    result = run_training(config, data, WorkerContext(), LoopHooks())
    nets = {name: result.trainer.averaged(name) for name in result.trainer.objective.network_names}
    return nets, result.trainer.objective.levels, {"iterations": result.trainer.step_count,
                                                   "train_seconds": result.train_seconds,
                                                   "wall_s": time.perf_counter() - start}


def labels_of(n: int, label: int) -> torch.Tensor:
    return torch.full((n,), label + 1, dtype=torch.long)  # dataset label → net label


def toy_task(args, config) -> dict:
    from cdrl.data.toy2d import ATTRIBUTE_NAMES, eight_squares_with_attributes
    from cdrl.metrics.composition import quadrant_fractions
    from cdrl.metrics.toy import toy_report
    from pipeline.evaluation import held_out_reference

    points, labels = eight_squares_with_attributes(config.data.num_points, config.run.seed)
    nets, levels, training = train(config, TrainingData(torch.from_numpy(points), torch.from_numpy(labels)))
    n, steps = args.num_samples, config.langevin.num_steps
    left, top = ATTRIBUTE_NAMES.index("left"), ATTRIBUTE_NAMES.index("top")
    settings = {
        "unconditional (null label)": None,
        "left": Conditioning([labels_of(n, left)], [1.0]),
        "top": Conditioning([labels_of(n, top)], [1.0]),
        "left AND top": Conditioning([labels_of(n, left), labels_of(n, top)], [1.0, 1.0]),
        "left AND top, weights 2": Conditioning([labels_of(n, left), labels_of(n, top)], [2.0, 2.0]),
        "left AND NOT top": Conditioning([labels_of(n, left), labels_of(n, top)], [1.0, -1.0]),
    }
    null = Conditioning([torch.zeros(n, dtype=torch.long)], [1.0])
    composition = {}
    for name, cond in settings.items():
        torch.manual_seed(args.seed)
        x = generate(nets["energy_net"], nets["initializer"], levels, n, (2,), steps, cond=cond or null)
        composition[name] = quadrant_fractions(x.numpy())
    reference = held_out_reference(config, n)  # fresh 8squares points
    budget = {}
    for k in STEPS:
        for final_noise in (True, False):
            if not final_noise and k != steps:
                continue
            torch.manual_seed(args.seed)
            start = time.perf_counter()
            x, _ = generate_in_batches(nets["energy_net"], nets["initializer"], levels, n, (2,), k, n, cond=null,
                                       final_step_noise=final_noise)
            seconds = time.perf_counter() - start
            report = toy_report(x.numpy(), reference, distribution="8squares")
            budget[f"{k}{'' if final_noise else ' (noise-free final step)'}"] = {
                **report, "samples_per_s": n / seconds}
    return {"training": training, "composition": composition, "steps_per_level": budget}


def digits_task(args, config, data_uri, manifest, out_dir: Path) -> dict:
    from cdrl.metrics.digits_classifier import digits_split, load_digits_classifier
    from cdrl.metrics.features import DigitsFeatures, extract_features
    from cdrl.metrics.ood import ood_report
    from cdrl.plots import image_grid_png
    from pipeline.evaluation import fid
    from pipeline.local_backend import load_training_data
    from pipeline.reference_stats import ensure_reference_stats

    data = load_training_data(data_uri)
    nets, levels, training = train(config, data)
    classifier = load_digits_classifier()
    extractor = DigitsFeatures()
    reference = ensure_reference_stats(data_uri, manifest, extractor)
    n, steps, gen = args.num_samples, config.langevin.num_steps, config.generation
    classes = torch.arange(n) % 10

    def sample(cond, k=steps, final_noise=True):
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        x, _ = generate_in_batches(nets["energy_net"], nets["initializer"], levels, n, (1, 8, 8), k, gen.batch_size,
                                   cond=cond, tweedie=gen.tweedie, final_step_noise=final_noise)
        return x.clamp(-1, 1), n / (time.perf_counter() - start)

    def digits_fid(x):
        return fid(extract_features(extractor, x), reference.mu, reference.sigma)

    guidance = {}
    for w in GUIDANCE_WEIGHTS:
        x, _ = sample(Conditioning.guided(classes + 1, w))
        with torch.no_grad():
            accuracy = float((classifier(x).argmax(1) == classes).float().mean())
        guidance[w] = {"class_accuracy": accuracy, "digits_fid": digits_fid(x)}
        image_grid_png(x[:64].numpy(), out_dir / f"guidance_w{w}.png")
    plot = guidance_plot(guidance, out_dir / "guidance.png")

    split = digits_split()
    held_x, held_y = torch.from_numpy(split["held_out_x"]), torch.from_numpy(split["held_out_y"])
    mask = torch.zeros_like(held_x)
    mask[:, :, :4] = 1  # the upper half observed, the lower half filled in
    torch.manual_seed(args.seed)
    completed = generate(nets["energy_net"], nets["initializer"], levels, len(held_x), (1, 8, 8), steps,
                         tweedie=gen.tweedie, inpaint=Inpainting(held_x, mask), cond=Conditioning([torch.zeros(len(held_x), dtype=torch.long)], [1.0]))
    with torch.no_grad():
        blank = torch.where(mask.bool(), held_x, torch.full_like(held_x, -1.0))
        inpainting = {
            "completed_accuracy": float((classifier(completed.clamp(-1, 1)).argmax(1) == held_y).float().mean()),
            "upper_half_only_accuracy": float((classifier(blank).argmax(1) == held_y).float().mean()),
            "original_accuracy": float((classifier(held_x).argmax(1) == held_y).float().mean()),
            "observed_pixels_unchanged": bool(torch.equal(completed[:, :, :4], held_x[:, :, :4])),
            "num_digits": len(held_x),
        }
    image_grid_png(completed[:64].numpy(), out_dir / "inpainting.png")
    ood = ood_report(nets["energy_net"], held_x, levels)
    null = Conditioning([torch.zeros(n, dtype=torch.long)], [1.0])
    budget = {}
    for k in STEPS:
        x, rate = sample(null, k)
        budget[str(k)] = {"digits_fid": digits_fid(x), "samples_per_s": rate}
    x, rate = sample(null, steps, final_noise=False)
    budget[f"{steps} (noise-free final step)"] = {"digits_fid": digits_fid(x), "samples_per_s": rate}
    return {"training": training, "guidance": {str(k): v for k, v in guidance.items()}, "inpainting": inpainting,
            "ood": ood, "steps_per_level": budget, "plots": {"guidance": str(plot)}}


def guidance_plot(guidance: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = list(guidance)
    fig, left = plt.subplots(figsize=(5, 3.5))
    left.plot(weights, [guidance[w]["class_accuracy"] for w in weights], "o-", color="tab:blue")
    left.set_xlabel("guidance weight w")
    left.set_ylabel("class accuracy", color="tab:blue")
    right = left.twinx()
    right.plot(weights, [guidance[w]["digits_fid"] for w in weights], "s--", color="tab:red")
    right.set_ylabel("digits-FID", color="tab:red")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_to_mlflow(args, config, report: dict, out_dir: Path) -> dict:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = args.tracking_uri or f"sqlite:///{out_dir.parent / 'mlflow.db'}"
    client = MlflowClient(uri)
    found = client.get_experiment_by_name("downstream")
    experiment_id = found.experiment_id if found else client.create_experiment("downstream")
    run = client.create_run(experiment_id, run_name=f"downstream-{args.task}", tags={"task": args.task})
    params = [Param(k, str(v)[:500]) for k, v in flatten(config.to_dict()).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    now = int(time.time() * 1000)
    flat = {k: v for k, v in flatten({k: report[k] for k in report if k not in ("machine", "plots")}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
    safe = lambda k: "".join(c if c.isalnum() or c in "_-./ " else "_" for c in k)  # noqa: E731
    client.log_batch(run.info.run_id, metrics=[Metric(safe(k), float(v), now, 0) for k, v in flat.items()])
    for png in out_dir.glob("*.png"):
        client.log_artifact(run.info.run_id, str(png), artifact_path="plots")
    client.set_terminated(run.info.run_id)
    return {"tracking_uri": uri, "run_id": run.info.run_id}


def print_tables(report: dict) -> None:
    if "composition" in report:
        rows = [[name, *fr.values()] for name, fr in report["composition"].items()]
        print(format_table(["setting", "top_left", "top_right", "bottom_left", "bottom_right"], rows))
        rows = [[k, v["in_support"], v["balance"], v["samples_per_s"]] for k, v in report["steps_per_level"].items()]
        print(format_table(["steps/level", "in_support", "balance", "samples/s"], rows))
    if "guidance" in report:
        rows = [[w, v["class_accuracy"], v["digits_fid"]] for w, v in report["guidance"].items()]
        print(format_table(["w", "class accuracy", "digits-FID"], rows))
        print(report["inpainting"])
        print(format_table(["OOD set", "AUROC"], [[k, v] for k, v in report["ood"].items()]))
        rows = [[k, v["digits_fid"], v["samples_per_s"]] for k, v in report["steps_per_level"].items()]
        print(format_table(["steps/level", "digits-FID", "samples/s"], rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = setup_torch("cpu", args.threads)
    machine = machine_info(device)
    warn_if_busy(machine)
    out_dir = Path(args.output_dir).absolute() / args.task
    out_dir.mkdir(parents=True, exist_ok=True)
    common = [f"train.time_budget_s={args.budget_s}", "train.iterations=1000000", "train.checkpoint_every=0",
              f"run.seed={args.seed}", f"run.output_dir={out_dir}", f"run.name=downstream-{args.task}"]
    if args.task == "toy":
        config = load_config(CONFIGS / "toy.yaml", [*common, "model.num_classes=4", "train.label_dropout=0.2",
                                                    *args.overrides])
        report = toy_task(args, config)
    else:
        from pipeline.run_data import dataset_for_run

        config = load_config(CONFIGS / "digits.yaml", [*common, "model.num_classes=10", *args.overrides])
        report = digits_task(args, config, *dataset_for_run(config), out_dir)
    report = {"benchmark": "downstream", "task": args.task, "timestamp": utc_timestamp(), "budget_s": args.budget_s,
              "num_samples": args.num_samples, "seed": args.seed, "overrides": args.overrides, **report,
              "machine": machine, "load_average_after": os.getloadavg()[0]}
    report["mlflow"] = log_to_mlflow(args, config, report, out_dir)
    print_tables(report)
    save_report(report, args.json, "downstream", args.task)
    return 0


if __name__ == "__main__":
    from cdrl.config import ConfigError

    run_main(main, (ConfigError,))
