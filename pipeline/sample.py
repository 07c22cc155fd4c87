"""Draw samples from a trained checkpoint (EMA weights) with its method's sampler.

    python pipeline/sample.py --checkpoint runs/toy/checkpoints/step_00008000.pt --num-samples 2500 --out s.npy
    python pipeline/sample.py --checkpoint s3://bucket/ckpt/.../checkpoint.pt --num-samples 64 --out s.npy --grid s.png

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
from pipeline.checkpoint_io import read_checkpoint  # noqa: E402
from pipeline.cli import run_main  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipeline/sample.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file: local path or s3:// URI")
    parser.add_argument("--num-samples", type=int, required=True)
    parser.add_argument("--out", required=True, help="output .npy file")
    parser.add_argument("--steps-per-level", type=int,
                        help="Langevin steps per level, or per chain for single-level methods (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", help="also write a PNG: image grid, or scatter for 2-D data")
    parser.add_argument("--label", type=int, help="class label (0-based) for a class-conditional model")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight w (§8)")
    parser.add_argument("--raw-weights", action="store_true", help="use the raw (non-EMA) weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    torch.manual_seed(args.seed)
    config, nets, data_shape = nets_from_checkpoint(read_checkpoint(args.checkpoint), args.device, not args.raw_weights)
    levels = build_levels(config, args.device)
    cond = None
    if args.label is not None:
        if not config.model.num_classes:
            raise ConfigError("--label given but the checkpoint's model is unconditional (model.num_classes=0)")
        labels = torch.full((args.num_samples,), args.label + 1, dtype=torch.long)
        cond = Conditioning.guided(labels, args.guidance if args.guidance is not None else config.generation.guidance_weight)
    samples = build_sampler(config, levels).sample(nets, args.num_samples, data_shape, args.device,
                                                   steps=args.steps_per_level, cond=cond).samples
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
    from pipeline.datasets.errors import StorageError

    run_main(main, (ConfigError, FileNotFoundError, ValueError, StorageError))
