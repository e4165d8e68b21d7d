"""The mammography study, as the platform sees it (registered by importing this module): what
it is (tasks, headline, data settings, search space, dashboard, the main job's profiles), its
trainer (trainer.py: the run's hooks), its holdout, grid and paper, and what the benchmarks and
the real-data page measure of it."""
from __future__ import annotations

import numpy as np

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.specs.headline import Headline
from projects.core.study import Study, register_study
from projects.core.uncertainty import classification_scores
from projects.mammography import grid, presentation, profiles
from projects.mammography.config import MammographyConfig
from projects.mammography.data import TASKS
from projects.mammography.trainer import TRAINER, check_config, holdout_data


class MammographyStudy(Study):
    name = "mammography"
    config_cls = MammographyConfig
    grid_cls = grid.MammographyGridConfig
    tasks = TASKS + tuple(f"roi_{t}" for t in TASKS)  # ROI models are models of their own (config.registry_task)
    headline = Headline("accuracy", "test accuracy", baselines=(tracking.baseline_metric("majority_accuracy"),),
                        # accuracy alone rewards the all-NORM collapse (64% for free), macro-F1 does not
                        selection=tracking.val_metric("f1_macro"), best_by="f1_macro")
    trainer = TRAINER
    unit = "patient"
    # Every setting the data preparation / the holdout reads (tests/unit/test_data_fields.py):
    # runs that share them share one prepared data set / one prepared holdout.
    _input = ("input", "roi_crop_px", "roi_norm_crops")  # films or lesion crops, and how they are cut
    data_fields = ("data", "task", *_input, "image_size", "split", "val_fraction", "seed", "skip_missing",
                   "embedded_size", "holdout_fraction")
    grid_data_fields = data_fields
    holdout_fields = ("data", "task", *_input, "image_size", "skip_missing", "embedded_size", "holdout_fraction")
    # The paper's ResNets at the three image sizes it tried, and the training knobs.
    default_space = ("arch=resnet18|resnet34|resnet50|resnet101,image_size=64|128|256,lr=0.0001:0.01:log,"
                     "augment=false|true,class_weighted=false|true")
    summary_metrics = ((presentation.ACC, "acc"), (presentation.BASE_ACC, "baseline"), (presentation.F1, "F1-macro"))
    dashboard = presentation.DASHBOARD
    profiles = profiles.PROFILES  # the main job's (pipeline/main.py)
    check = staticmethod(check_config)

    def task_of(self, config) -> str:
        return config.registry_task

    def run_name(self, config) -> str:
        return f"{config.arch}-{config.registry_task}-{config.split.replace(':', '-')}"

    # the holdout (projects.core.specs.holdout.HoldoutStudy): whole patients (holdout.py)
    holdout = staticmethod(holdout_data)

    def holdout_scores(self, config, holdout, outputs):
        """A classifier's class probabilities on the holdout, by patient."""
        return classification_scores(holdout.targets, outputs.argmax(1), holdout.units, outputs.shape[1])

    def holdout_baselines(self, config, holdout, outputs):
        """Always the holdout's commonest class: the best any constant answer does on accuracy
        (balanced accuracy of every constant answer is 1/n_classes)."""
        majority = int(np.bincount(np.asarray(holdout.targets, dtype=int), minlength=outputs.shape[1]).argmax())
        constant = np.zeros_like(outputs, dtype=np.float32)
        constant[:, majority] = 1.0
        return {"majority": constant}

    # the grid: the paper's scenarios
    grid_configs = staticmethod(grid.scenarios)
    grid_cell = staticmethod(grid.cell)
    comparison_table = staticmethod(grid.comparison_table)
    summary_lines = staticmethod(presentation.summary_lines)

    def grid_run_name(self, grid_config) -> str:
        return f"grid-{grid_config.base.task}"

    def check_space(self, space, base) -> None:
        import timm

        arch = space.get("arch")
        for a in (arch.values() if arch is not None else (base.arch,)):
            if not timm.is_model(str(a)):
                raise InputError("--space", f"arch: unknown timm architecture {a!r}")

    # the paper (dashboards.paper.PaperStudy)
    paper_points = staticmethod(presentation.paper_points)
    paper_vs_ours = staticmethod(presentation.paper_vs_ours)

    # what the benchmarks measure (benchmarks/), and the real-data page's blocks (pipeline/real_data.py)
    def reference_models(self):
        from projects.mammography.benchmark import REFERENCE_MODELS

        return REFERENCE_MODELS

    def training_references(self):
        from projects.mammography.benchmark import TRAINING_REFERENCES

        return TRAINING_REFERENCES

    def real_data(self, root, quick):
        from projects.mammography.real_data import blocks

        return blocks(root, quick)

    def real_searches(self, root, quick=False):
        from projects.mammography.real_data import searches

        return searches(root, quick)


STUDY = register_study(MammographyStudy())
