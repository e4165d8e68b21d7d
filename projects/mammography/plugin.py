"""The mammography study, as the platform sees it (registered by importing this module)."""
from __future__ import annotations

from projects.core import tracking
from projects.core.errors import InputError
from projects.core.study import Headline, Study, register_study
from projects.mammography import grid, holdout, presentation, profiles, study
from projects.mammography.config import MammographyConfig
from projects.mammography.data import TASKS


class MammographyStudy(Study):
    name = "mammography"
    config_cls = MammographyConfig
    grid_cls = grid.MammographyGridConfig
    tasks = TASKS + tuple(f"roi_{t}" for t in TASKS)  # ROI models are models of their own (config.registry_task)
    headline = Headline("accuracy", "test accuracy", baselines=(tracking.baseline_metric("majority_accuracy"),),
                        # accuracy alone rewards the all-NORM collapse (64% for free), macro-F1 does not
                        selection=tracking.val_metric("f1_macro"), best_by="f1_macro")
    unit = "patient"
    data_fields = ("data", "task", "image_size", "split", "val_fraction", "seed", "skip_missing", "embedded_size",
                   "holdout_fraction")
    grid_data_fields = data_fields
    holdout_fields = ("data", "task", "image_size", "skip_missing", "embedded_size", "holdout_fraction")
    # The paper's ResNets at the three image sizes it tried, and the training knobs.
    default_space = ("arch=resnet18|resnet34|resnet50|resnet101,image_size=64|128|256,lr=0.0001:0.01:log,"
                     "augment=false|true,class_weighted=false|true")
    summary_metrics = ((presentation.ACC, "acc"), (presentation.BASE_ACC, "baseline"), (presentation.F1, "F1-macro"))
    dashboard = presentation.DASHBOARD
    profiles = profiles.PROFILES

    def task_of(self, config) -> str:
        return config.registry_task

    def run_name(self, config) -> str:
        return f"{config.arch}-{config.registry_task}-{config.split.replace(':', '-')}"

    def grid_run_name(self, grid_config) -> str:
        return f"grid-{grid_config.base.task}"

    def check(self, config) -> None:
        study.check_config(config)

    def prepare(self, config):
        return study.prepare_data(config)

    def run(self, config, prepared=None, run_kind=tracking.RUN_KIND_SINGLE, on_epoch=None):
        return study.run(config, prepared, run_kind=run_kind, on_epoch=on_epoch)

    def holdout(self, config):
        return study.holdout_data(config)

    def holdout_scores(self, config, holdout_data, outputs):
        return holdout.holdout_scores(config, holdout_data, outputs)

    def holdout_baselines(self, config, holdout_data, outputs):
        return holdout.holdout_baselines(holdout_data, outputs)

    def count_params(self, config, prepared) -> int:
        from projects.core.efficiency import count_params
        from projects.mammography.models import build_classifier

        return count_params(build_classifier(config.arch, len(prepared.class_names)))

    def grid_configs(self, grid_config) -> list:
        return grid.scenarios(grid_config)

    def grid_cell(self, config):
        return grid.cell(config)

    def comparison_table(self, runs):
        return grid.comparison_table(runs)

    def check_space(self, space, base) -> None:
        import timm

        arch = space.get("arch")
        for a in (arch.values() if arch is not None else (base.arch,)):
            if not timm.is_model(str(a)):
                raise InputError("--space", f"arch: unknown timm architecture {a!r}")

    def paper_points(self):
        return presentation.paper_points()

    def paper_vs_ours(self, table):
        return presentation.paper_vs_ours(table)

    def summary_lines(self, table) -> list[str]:
        return presentation.summary_lines(table)

    def reference_models(self):
        from projects.mammography.benchmark import REFERENCE_MODELS

        return REFERENCE_MODELS

    def real_data(self, root, quick):
        from projects.mammography.real_data import blocks

        return blocks(root, quick)

    def training_references(self):
        from projects.mammography.benchmark import TRAINING_REFERENCES

        return TRAINING_REFERENCES


STUDY = register_study(MammographyStudy())
