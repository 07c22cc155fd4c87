"""Draw samples from a trained checkpoint (EMA weights) with its method's sampler.

    python pipeline/sample.py --checkpoint runs/toy/checkpoints/step_00008000.pt --num-samples 2500 --out s.npy
    python pipeline/sample.py --checkpoint s3://bucket/ckpt/.../checkpoint.pt --num-samples 64 --out s.npy --grid s.png
    python pipeline/sample.py --model models:/cdrl-8squares@champion --num-samples 2500 --out s.npy

Writes float32 samples in data space, shape (N, *data_shape). ``--steps-per-level`` below the training
value is the sampling-efficient variant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not pipeline/ (see train.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cdrl.config import ConfigError  # noqa: E402
from cdrl.factory import build_levels, build_sampler, nets_from_checkpoint  # noqa: E402
from cdrl.generation import Conditioning  # noqa: E402
from pipeline.checkpoints import read_checkpoint  # noqa: E402
from pipeline.cli import Parser, run_main  # noqa: E402
from pipeline.model_ref import ModelRefError, resolve_checkpoint  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(prog="pipeline/sample.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, metavar="REF",
                        help="checkpoint file or folder (local path or s3:// URI), a run name, or a registered model: "
                             "models:/NAME@ALIAS or models:/NAME/VERSION (tracking server: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--num-samples", type=int, required=True, metavar="N", help="how many samples to draw (>= 1)")
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--steps-per-level", type=int, help="Langevin steps per level (default: the config's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler's randomness (default: %(default)s)")
    parser.add_argument("--grid", help="also write a PNG: image grid, or scatter for 2-D data")
    parser.add_argument("--label", type=int, help="class label (0-based) for a class-conditional model")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight w (§8)")
    parser.add_argument("--raw-weights", action="store_true", help="use the raw (non-EMA) weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device to sample on (default: %(default)s)")
    return parser.parse_args(argv)


def draw_samples(config, nets: dict, data_shape: tuple[int, ...], num_samples: int, label: int | None = None,
                 guidance_weight: float | None = None, steps_per_level: int | None = None, seed: int = 0,
                 device: str = "cpu") -> torch.Tensor:
    """``num_samples`` float32 samples (N, *data_shape) on the CPU from the method's sampler (CDRL: ancestral
    sampling, §7), guided by ``label``
    (0-based) with weight ``guidance_weight`` (§8, default the config's) for a class-conditional model."""
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    torch.manual_seed(seed)
    cond = None
    if label is not None:
        if not config.model.num_classes:
            raise ConfigError("a label was given but the model is unconditional (model.num_classes=0)")
        if not 0 <= label < config.model.num_classes:
            raise ConfigError(f"label {label} is outside 0..{config.model.num_classes - 1}")
        labels = torch.full((num_samples,), label + 1, dtype=torch.long)
        cond = Conditioning.guided(labels, config.generation.guidance_weight if guidance_weight is None else guidance_weight)
    samples = build_sampler(config, build_levels(config, device)).sample(
        nets, num_samples, data_shape, device, steps=steps_per_level, cond=cond).samples
    return samples.float()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.steps_per_level is not None and args.steps_per_level < 0:
        raise ConfigError(f"--steps-per-level must be >= 0, got {args.steps_per_level}")
    if args.guidance is not None and args.guidance < 0:
        raise ConfigError(f"--guidance must be >= 0, got {args.guidance}")
    try:
        torch.device(args.device)
    except RuntimeError as err:
        raise ConfigError(f"--device {args.device!r}: {err}") from err
    checkpoint = resolve_checkpoint(args.checkpoint)
    config, nets, data_shape = nets_from_checkpoint(read_checkpoint(checkpoint), args.device, not args.raw_weights)
    samples = draw_samples(config, nets, data_shape, args.num_samples, args.label, args.guidance,
                           args.steps_per_level, args.seed, args.device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, samples.numpy().astype(np.float32))
    print(f"wrote {args.num_samples} samples of shape {tuple(data_shape)} to {out}")
    if args.grid:
        from cdrl.plots import image_grid_png, scatter_png

        path = scatter_png(samples.numpy(), args.grid) if len(data_shape) == 1 else image_grid_png(samples.numpy()[:64], args.grid)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from pipeline.storage import StorageError

    run_main(main, (ConfigError, FileNotFoundError, ValueError, StorageError, ModelRefError))  # RegistryError is one
