"""`mammography` and `mammography_grid` entry points (see MLproject)."""
from __future__ import annotations

import argparse
import sys

from projects.core import cli, tracking
from projects.mammography import grid as grid_mod
from projects.mammography import study
from projects.mammography.config import MammographyConfig


def add_config_args(parser: argparse.ArgumentParser) -> None:
    d = MammographyConfig()
    parser.add_argument("--data", default=d.data, help="'embedded' or a mini-MIAS / folder-per-class folder")
    parser.add_argument("--task", default=d.task, help="7class | benign_malignant | normal_abnormal")
    parser.add_argument("--arch", default=d.arch, help="any timm architecture (random init)")
    parser.add_argument("--weights", default=d.weights, help="optional local pretrained weights file")
    parser.add_argument("--image-size", type=cli.integer, default=d.image_size)
    parser.add_argument("--split", default=d.split, help="train:test ratio, e.g. 80:20")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--augment", type=cli.str2bool, default=d.augment)
    parser.add_argument("--augment-factor", type=cli.integer, default=d.augment_factor)
    parser.add_argument("--epochs", type=cli.integer, default=d.epochs)
    parser.add_argument("--batch-size", type=cli.integer, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--class-weighted", type=cli.str2bool, default=d.class_weighted)
    parser.add_argument("--patience", type=cli.integer, default=d.patience)
    parser.add_argument("--seed", type=cli.integer, default=d.seed)
    parser.add_argument("--skip-missing", type=cli.str2bool, default=d.skip_missing)
    parser.add_argument("--cpu-predict-n", type=cli.integer, default=d.cpu_predict_n)
    parser.add_argument("--log-model", type=cli.str2bool, default=d.log_model)
    parser.add_argument("--onnx-timing", type=cli.str2bool, default=d.onnx_timing,
                        help="also time ONNX Runtime (cpu_total_s_onnx ...)")


def config_from_args(args: argparse.Namespace) -> MammographyConfig:
    return MammographyConfig(
        data=args.data, task=args.task, arch=args.arch, weights=args.weights,
        image_size=args.image_size, split=args.split, val_fraction=args.val_fraction,
        augment=args.augment, augment_factor=args.augment_factor, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, class_weighted=args.class_weighted,
        patience=args.patience, seed=args.seed, skip_missing=args.skip_missing,
        cpu_predict_n=args.cpu_predict_n, log_model=args.log_model,
        onnx_timing=args.onnx_timing)


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mammography", description=__doc__)
    add_config_args(parser)
    config = config_from_args(parser.parse_args(argv))
    prepared = study.prepare_data(config)  # bad data fails here, before a run exists
    name = f"{config.arch}-{config.task}-{config.split.replace(':', '-')}"
    with tracking.study_run(tracking.EXPERIMENTS["mammography"], name, tags=tracking.process_tags()):
        result = study.run(config, prepared)
    print(f"run {result.run_id}: " + ", ".join(
        f"{k}={v:.3f}" for k, v in result.metrics.items()
        if k in ("test_accuracy", "test_f1_macro", "baseline_majority_accuracy")))
    return 0


@cli.entry_point
def grid_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mammography_grid", description=grid_mod.__doc__)
    add_config_args(parser)
    parser.add_argument("--archs", type=cli.str_list, default=None,
                        help="comma-separated timm architectures (default: --arch)")
    parser.add_argument("--splits", type=cli.str_list, default=None)
    parser.add_argument("--repeats", type=cli.positive_int, default=1)
    parser.add_argument("--benign-malignant", type=cli.str2bool, default=True)
    args = parser.parse_args(argv)
    base = config_from_args(args)
    grid = grid_mod.MammographyGridConfig(base=base, archs=args.archs or [base.arch],
                                          splits=args.splits or list(grid_mod.paper.SPLITS),
                                          benign_malignant=args.benign_malignant, repeats=args.repeats)
    study.prepare_data(base)  # validate the data once before any run starts
    with tracking.study_run(tracking.EXPERIMENTS["mammography"], f"grid-{base.task}",
                            tags=tracking.process_tags()):
        grid_mod.run_grid(grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
