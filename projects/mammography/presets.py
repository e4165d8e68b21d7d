"""Named recipes: every setting a recipe decides, under one name a user passes as one
parameter (`-P preset=roi-normal-abnormal`, `--preset roi-normal-abnormal`). A setting left at
its default takes the preset's value; any other value the user gives wins. The real-data page
(projects/mammography/real_data.py) trains these same presets, so the numbers it shows are what
a user gets on their own films with the name alone.

The ROI recipes were chosen on validation in the ROI study behind projects/mammography/roi.py
(resnet18 from scratch, Adam 1e-3 + weight decay 1e-4, cosine decay, batch 32, the epoch with
the best validation score of the task's own metric, evaluated on the mean of 8 views); the film
recipes are the README's fix for the paper's all-NORM collapse (class weights).
"""
from __future__ import annotations

_ROI = dict(input="roi", arch="resnet18", lr=1e-3, weight_decay=1e-4, lr_schedule="cosine", batch_size=32,
            tta=True)
_FILM = dict(arch="resnet18", image_size=128, epochs=20, lr=1e-3, class_weighted=True)

PRESETS: dict[str, dict] = {
    "roi-normal-abnormal": _ROI | dict(task="normal_abnormal", image_size=48, epochs=30, class_weighted=True,
                                       select_on="balanced_accuracy"),
    "roi-7class": _ROI | dict(task="7class", image_size=64, epochs=40, sampling="balanced", select_on="f1_macro"),
    "roi-benign-malignant": _ROI | dict(task="benign_malignant", image_size=64, epochs=30, class_weighted=True,
                                        select_on="balanced_accuracy"),
    "film-7class": _FILM | dict(task="7class", select_on="f1_macro"),
    "film-normal-abnormal": _FILM | dict(task="normal_abnormal", select_on="balanced_accuracy"),
}
