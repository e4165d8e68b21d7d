"""The pathology study, as the platform sees it (registered by importing this module): what it
is (task, headline, data settings, search space, dashboard, profiles), its trainer
(trainer.py: the run's hooks), its holdout, grid and paper (Table V), and what the benchmarks
and the real-data pages measure of it."""
from __future__ import annotations

import numpy as np

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.space import Fixed, IntRange, Space
from projects.core.specs.benchmarks import SearchBenchmark
from projects.core.specs.headline import Headline
from projects.core.study import Study, register_study
from projects.pathology import grid, presentation, profiles
from projects.pathology.config import PathologyConfig
from projects.pathology.metrics import unit_scores
from projects.pathology.trainer import TRAINER, check_config, holdout_data


class PathologyStudy(Study):
    name = "pathology"
    config_cls = PathologyConfig
    grid_cls = grid.PathologyGridConfig
    tasks = ("tumor",)
    headline = Headline("jaccard", "test Jaccard (per tile)",
                        baselines=(presentation.BASE_BACKGROUND, presentation.BASE_TUMOR),
                        selection=tracking.val_metric("jaccard"))
    unit = "source image"
    # Every setting the data preparation / the holdout reads (tests/unit/test_data_fields.py):
    # runs that share them share one prepared data set / one prepared holdout.
    data_fields = ("data", "mpp", "downsample", "tile_size", "equalization", "augment_flips", "test_count",
                   "test_fraction", "val_fraction", "seed", "embedded_images", "embedded_size", "holdout_fraction")
    holdout_fields = ("data", "mpp", "downsample", "tile_size", "equalization", "embedded_images", "embedded_size",
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
    trainer = TRAINER
    dashboard = presentation.DASHBOARD
    profiles = profiles.PROFILES  # the main job's (pipeline/main.py)
    # Embedded PAIP, 16 images of 256 px cut into 64-px tiles (~3 tumour-bearing val tiles).
    search_benchmark = SearchBenchmark(
        base=dict(data="embedded", embedded_images=16, embedded_size=256, tile_size=64, augment_flips=False,
                  lr=1e-3, batch_size=8, patience=0, cpu_predict_n=8, log_model=False, onnx_timing=False,
                  progress=False, seed=0, equalization="hist"),
        space={"quick": "arch=unet|elunet,depth=3,filters=8",
               "full": "arch=unet|elunet,depth=3|4,filters=4|8|16"},
        epochs={"quick": 2, "full": 4}, n_trials={"quick": 2, "full": 8}, seeds={"quick": (0,), "full": (0, 1, 2)},
        about="embedded PAIP 16 images of 256px, 64px tiles, lr 1e-3")

    check = staticmethod(check_config)

    def prepare(self, config):
        # Tiles depend on the data settings only: a depth every tile size allows keeps an
        # unusual model setting (checked per run) from blocking the data.
        from projects.pathology.models import MIN_DEPTH

        return self.trainer.prepare(config.replace(arch="unet", depth=MIN_DEPTH))

    def run_name(self, config) -> str:
        return f"{config.arch}-n{config.filters}-d{config.depth}"

    # the holdout (projects.core.specs.holdout.HoldoutStudy): whole source images (holdout.py)
    holdout = staticmethod(holdout_data)

    def holdout_scores(self, config, holdout, outputs):
        """A model's tumour probabilities on the holdout tiles, by source image."""
        return unit_scores(outputs[:, 0] > config.threshold, holdout.targets, holdout.valid, holdout.units)

    def holdout_baselines(self, config, holdout, outputs):
        """No tumour anywhere, or tumour everywhere (the runs' baseline_jaccard_all_* on the holdout)."""
        return {"all_background": np.zeros_like(outputs, dtype=np.float32),
                "all_tumor": np.ones_like(outputs, dtype=np.float32)}

    # the grid: Table V
    grid_configs = staticmethod(grid.grid_configs)
    grid_cell = staticmethod(grid.cell)
    comparison_table = staticmethod(grid.comparison_table)
    summary_lines = staticmethod(presentation.summary_lines)

    def grid_run_name(self, grid_config) -> str:
        return "grid-table-v"

    def grid_tags(self, grid_config, prepared) -> dict[str, str]:
        return {tracking.TAG_TASK: self.tasks[0], tracking.TAG_DATASET_DIGEST: prepared.digest}

    # the search
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

    # the paper: its numbers (dashboards.paper.PaperStudy) and the configs it trained
    # (projects.search.warm.PaperCellsStudy)
    paper_points = staticmethod(presentation.paper_points)
    paper_vs_ours = staticmethod(presentation.paper_vs_ours)

    def paper_cells(self):
        from projects.pathology.paper import TABLE_V

        return [{"arch": c.arch, "filters": c.filters, "depth": c.depth} for c in TABLE_V]

    # what the benchmarks measure (benchmarks/)
    def reference_models(self):
        from projects.pathology.benchmark import REFERENCE_MODELS

        return REFERENCE_MODELS

    def training_references(self):
        from projects.pathology.benchmark import TRAINING_REFERENCES

        return TRAINING_REFERENCES

    def benchmark_sections(self):
        from projects.pathology import bench_pipeline, bench_tracking

        return {"tracking_overhead": bench_tracking.run, "data_pipeline": bench_pipeline.run}

    # the real-data pages' blocks (pipeline/real_data.py, pipeline/rank_stability.py)
    def real_data(self, root, quick):
        from projects.pathology.real_data import blocks

        return blocks(root, quick)

    def real_searches(self, root, quick=False):
        from projects.pathology.real_data import searches

        return searches(root, quick)

    def rank_blocks(self, root):
        from projects.pathology.real_data import rank_blocks

        return rank_blocks(root)


STUDY = register_study(PathologyStudy())
