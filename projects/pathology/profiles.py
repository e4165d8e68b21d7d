"""What the main job runs for pathology under each profile, as data.

quick: U-Net against ELU-Net at the same filters on small tiles; depth is left to the
search. 4 epochs gave per-tile Jaccard 0.61 / 0.73 against all-background 0.27. The search
is short (small archs only) so the whole main job stays within 10 minutes on 2 cores.
smoke: every stage wired end to end in about a minute (tests use it); models barely train.
paper: Table V's 13 cells with the paper's settings (hours on a CPU) and a 30-trial search.
"""
from __future__ import annotations

from projects.core.specs.pipeline import SearchPlan, StudyProfile
from projects.pathology.config import PathologyConfig
from projects.pathology.grid import PathologyGridConfig

PROFILES = {
    "quick": StudyProfile(
        PathologyGridConfig(base=PathologyConfig.of(embedded_images=16, embedded_size=256, tile_size=64, epochs=3,
                                                    batch_size=8, lr=1e-3, patience=0, cpu_predict_n=57),
                            cells=[("elunet", 8, 3), ("unet", 8, 3)]),
        # 6 trials of 3 epochs, unpruned: a 1-epoch score does not rank these models (a pruned
        # search threw its winners away), and 3 epochs teach every trial something (the grid's
        # cells reach Jaccard 0.6-0.7 at 3). 8 configs: enumerated, none twice.
        SearchPlan(n_trials=6, epochs=3, pruner="none", space="arch=unet|elunet,depth=3:4,filters=4|8,batch_size=8")),
    "smoke": StudyProfile(
        # 3 epochs of a small ELU-Net: enough to beat both trivial baselines (test Jaccard 0.44
        # against 0.13, measured), so the smoke job promotes a champion the UI test can open.
        PathologyGridConfig(base=PathologyConfig.of(embedded_images=8, embedded_size=256, tile_size=64, epochs=3,
                                                    batch_size=8, lr=3e-3, patience=0, cpu_predict_n=8,
                                                    progress=False),
                            cells=[("elunet", 4, 3)]),
        SearchPlan(n_trials=2, epochs=1, space="arch=unet|elunet,depth=3,filters=4,batch_size=8")),
    # No trial is pruned before epoch 5: on the embedded tiles the best validation Jaccard up to
    # epoch k (what the median pruner judges) of 16 U-Net/ELU-Net configurations ranks them like
    # the last epoch's (Spearman rho >= 0.8) from epoch 5 on (benchmarks/RESULTS.md section 11;
    # rho 0.25 at epoch 1, 0.63 at 3; on MoNuSeg from epoch 2).
    "paper": StudyProfile(PathologyGridConfig(),
                          SearchPlan(n_trials=30, epochs=40, space="arch=unet|elunet,depth=3:5,filters=4:16",
                                     pruner="median:warmup=5")),
}
