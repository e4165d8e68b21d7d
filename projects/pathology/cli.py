"""`pathology` and `pathology_grid` entry points (see MLproject)."""
from __future__ import annotations

import argparse
import sys

from projects.core import cli, tracking
from projects.pathology import grid as grid_mod
from projects.pathology import study
from projects.pathology.config import PathologyConfig


def add_config_args(parser: argparse.ArgumentParser) -> None:
    d = PathologyConfig()
    parser.add_argument("--data", default=d.data, help="'embedded' or a PAIP 2023 / images+masks folder")
    parser.add_argument("--arch", default=d.arch, help="unet | elunet | smp:<Arch>:<encoder>")
    parser.add_argument("--filters", type=cli.integer, default=d.filters)
    parser.add_argument("--depth", type=cli.integer, default=d.depth)
    parser.add_argument("--upsample", default=d.upsample)
    parser.add_argument("--mpp", type=float, default=d.mpp, help="keep tiles at this mpp (0: all)")
    parser.add_argument("--tile-size", type=cli.integer, default=d.tile_size)
    parser.add_argument("--equalization", default=d.equalization, help="hist | clahe | none")
    parser.add_argument("--augment-flips", type=cli.str2bool, default=d.augment_flips)
    parser.add_argument("--test-count", type=cli.integer, default=d.test_count)
    parser.add_argument("--test-fraction", type=float, default=d.test_fraction)
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--epochs", type=cli.integer, default=d.epochs)
    parser.add_argument("--batch-size", type=cli.integer, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--patience", type=cli.integer, default=d.patience)
    parser.add_argument("--threshold", type=float, default=d.threshold)
    parser.add_argument("--seed", type=cli.integer, default=d.seed)
    parser.add_argument("--cpu-predict-n", type=cli.integer, default=d.cpu_predict_n)
    parser.add_argument("--log-model", type=cli.str2bool, default=d.log_model)
    parser.add_argument("--onnx-timing", type=cli.str2bool, default=d.onnx_timing,
                        help="also time ONNX Runtime (cpu_total_s_onnx ...)")


def config_from_args(args: argparse.Namespace) -> PathologyConfig:
    return PathologyConfig(
        data=args.data, arch=args.arch, filters=args.filters, depth=args.depth, upsample=args.upsample,
        mpp=args.mpp, tile_size=args.tile_size, equalization=args.equalization,
        augment_flips=args.augment_flips, test_count=args.test_count, test_fraction=args.test_fraction,
        val_fraction=args.val_fraction, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        patience=args.patience, threshold=args.threshold, seed=args.seed,
        cpu_predict_n=args.cpu_predict_n, log_model=args.log_model,
        onnx_timing=args.onnx_timing)


@cli.entry_point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathology", description=__doc__)
    add_config_args(parser)
    config = config_from_args(parser.parse_args(argv))
    prepared = study.prepare_data(config)  # bad data fails here, before a run exists
    with tracking.study_run(tracking.EXPERIMENTS["pathology"], f"{config.arch}-n{config.filters}-d{config.depth}",
                            tags=tracking.process_tags()):
        result = study.run(config, prepared)
    print(f"run {result.run_id}: " + ", ".join(
        f"{k}={v:.3f}" for k, v in result.metrics.items()
        if k in ("test_jaccard", "test_jaccard_pooled", "baseline_jaccard_all_background", "baseline_jaccard_all_tumor")))
    return 0


@cli.entry_point
def grid_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pathology_grid", description=grid_mod.__doc__)
    add_config_args(parser)
    parser.add_argument("--archs", type=cli.str_list, default=[], help="with --filters-list/--depths: a custom grid")
    parser.add_argument("--filters-list", type=cli.int_list, default=[])
    parser.add_argument("--depths", type=cli.int_list, default=[])
    parser.add_argument("--repeats", type=cli.positive_int, default=1)
    args = parser.parse_args(argv)
    base = config_from_args(args)
    cells = []
    if args.archs or args.filters_list or args.depths:
        cells = grid_mod.cells_from_lists(args.archs or [base.arch], args.filters_list or [base.filters],
                                          args.depths or [base.depth])
    grid = grid_mod.PathologyGridConfig(base=base, cells=cells, repeats=args.repeats)
    study.prepare_data(base)
    with tracking.study_run(tracking.EXPERIMENTS["pathology"], "grid-table-v", tags=tracking.process_tags()):
        grid_mod.run_grid(grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
