"""The pathology study, as the platform sees it (registered by importing this module)."""
from __future__ import annotations

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.space import Fixed, IntRange, Space
from projects.core.study import Headline, SearchBenchmark, Study, register_study
from projects.pathology import grid, presentation, profiles, study
from projects.pathology.config import PathologyConfig


class PathologyStudy(Study):
    name = "pathology"
    config_cls = PathologyConfig
    grid_cls = grid.PathologyGridConfig
    tasks = ("tumor",)
    headline = Headline("jaccard", "test Jaccard (per tile)",
                        baselines=(presentation.BASE_BACKGROUND, presentation.BASE_TUMOR),
                        selection=tracking.val_metric("jaccard"))
    unit = "source image"
    data_fields = ("data", "mpp", "tile_size", "equalization", "augment_flips", "test_count",
                   "test_fraction", "val_fraction", "seed", "embedded_images", "embedded_size", "holdout_fraction")
    holdout_fields = ("data", "mpp", "tile_size", "equalization", "embedded_images", "embedded_size",
                      "holdout_fraction")
    # One split and one tile cache for every cell of a grid (repeats vary the initialisation).
    grid_data_fields = tuple(f for f in data_fields if f != "seed")
    # Table V's axes and training knobs: U-Net / ELU-Net / an smp model, the depth and initial
    # filters the paper varied, learning rate, batch size, equalisation on/off. smp encoders
    # fix their own widths (filters is ignored) and allow depth <= 5; an smp arch with depth 6
    # is rejected before training. Add more with e.g.
    # `--space arch=unet|elunet|smp:Unet:resnet18|smp:FPN:mobilenet_v2`.
    default_space = ("arch=unet|elunet|smp:Unet:resnet18,depth=3:6,filters=4:32:pow2,lr=0.0001:0.01:log,"
                     "batch_size=4|8|16,equalization=hist|none")
    summary_metrics = ((presentation.JACCARD, "Jaccard per tile"), (presentation.BASE_BACKGROUND, "all-background"))
    dashboard = presentation.DASHBOARD
    profiles = profiles.PROFILES
    # Embedded PAIP, 16 images of 256 px cut into 64-px tiles (~3 tumour-bearing val tiles).
    search_benchmark = SearchBenchmark(
        base=dict(data="embedded", embedded_images=16, embedded_size=256, tile_size=64, augment_flips=False,
                  lr=1e-3, batch_size=8, patience=0, cpu_predict_n=8, log_model=False, onnx_timing=False,
                  progress=False, seed=0, equalization="hist"),
        space={"quick": "arch=unet|elunet,depth=3,filters=8",
               "full": "arch=unet|elunet,depth=3|4,filters=4|8|16"},
        epochs={"quick": 2, "full": 4}, n_trials={"quick": 2, "full": 8}, seeds={"quick": (0,), "full": (0, 1, 2)},
        about="embedded PAIP 16 images of 256px, 64px tiles, lr 1e-3")

    def run_name(self, config) -> str:
        return f"{config.arch}-n{config.filters}-d{config.depth}"

    def grid_run_name(self, grid_config) -> str:
        return "grid-table-v"

    def grid_tags(self, grid_config, prepared) -> dict[str, str]:
        return {tracking.TAG_TASK: self.tasks[0], tracking.TAG_DATASET_DIGEST: prepared.digest}

    def check(self, config) -> None:
        study.check_config(config)

    def prepare(self, config):
        # Tiles depend on the data settings only: a depth every tile size allows keeps an
        # unusual model setting (checked per run) from blocking the data.
        from projects.pathology.models import MIN_DEPTH

        return study.prepare_data(config.replace(arch="unet", depth=MIN_DEPTH))

    def run(self, config, prepared=None, run_kind=tracking.RUN_KIND_SINGLE, on_epoch=None):
        return study.run(config, prepared, run_kind=run_kind, on_epoch=on_epoch)

    def holdout(self, config):
        return study.holdout_data(config)

    def holdout_scores(self, config, holdout, outputs):
        return study.holdout_scores(config, holdout, outputs)

    def holdout_baselines(self, config, holdout, outputs):
        return study.holdout_baselines(outputs)

    def count_params(self, config, prepared) -> int:
        from projects.pathology.models import build_model, count_params

        return count_params(build_model(config.arch, config.filters, config.depth, upsample=config.upsample))

    def grid_configs(self, grid_config) -> list:
        return grid.grid_configs(grid_config)

    def grid_cell(self, config):
        return grid.cell(config)

    def comparison_table(self, runs):
        return grid.comparison_table(runs)

    def narrow_space(self, space: Space, base) -> Space:
        """With only U-Net/ELU-Net archs, `depth` is capped at what the tile size can be halved
        to (tile 64 -> depth <= 7, tile 48 -> depth <= 5). smp encoders have their own output
        stride, checked per trial (a rejected trial, not a trained one)."""
        from projects.pathology.models import MAX_DEPTH

        depth, arch, tile = space.get("depth"), space.get("arch"), space.get("tile_size")
        if depth is None or not isinstance(depth, IntRange) or (tile is not None and not isinstance(tile, Fixed)):
            return space
        archs = arch.values() if arch is not None else (base.arch,)
        if any(str(a).startswith("smp:") for a in archs):
            return space
        tile_size = tile.value if tile is not None else base.tile_size
        ok = [d for d in range(depth.low, depth.high + 1) if d <= MAX_DEPTH and tile_size % (2 ** (d - 1)) == 0]
        if not ok:
            most = max((d for d in range(1, MAX_DEPTH + 1) if tile_size % (2 ** (d - 1)) == 0), default=1)
            raise InputError("--space", f"no depth in {depth.text()} can halve tile size {tile_size}: "
                                        f"use depths up to {most} or another tile size")
        if (min(ok), max(ok)) == (depth.low, depth.high):
            return space
        return space.replace(IntRange("depth", min(ok), max(ok)) if len(ok) > 1 else Fixed("depth", ok[0]))

    def check_space(self, space, base) -> None:
        from projects.pathology.models import min_input_multiple

        arch = space.get("arch")
        for a in (arch.values() if arch is not None else (base.arch,)):
            min_input_multiple(str(a), 3)  # unknown arch / bad smp spec -> InputError now

    def paper_points(self):
        return presentation.paper_points()

    def paper_vs_ours(self, table):
        return presentation.paper_vs_ours(table)

    def summary_lines(self, table) -> list[str]:
        return presentation.summary_lines(table)

    def reference_models(self):
        from projects.pathology.benchmark import REFERENCE_MODELS

        return REFERENCE_MODELS

    def paper_cells(self):
        from projects.pathology.paper import TABLE_V

        return [{"arch": c.arch, "filters": c.filters, "depth": c.depth} for c in TABLE_V]

    def real_data(self, root, quick):
        from projects.pathology.real_data import blocks

        return blocks(root, quick)

    def rank_blocks(self, root):
        from projects.pathology.real_data import rank_blocks

        return rank_blocks(root)

    def training_references(self):
        from projects.pathology.benchmark import TRAINING_REFERENCES

        return TRAINING_REFERENCES

    def benchmark_sections(self):
        from projects.pathology import bench_pipeline, bench_tracking

        return {"tracking_overhead": bench_tracking.run, "data_pipeline": bench_pipeline.run}


STUDY = register_study(PathologyStudy())
