"""The platform's search on the MoNuSeg recipe (projects/pathology/real_data.py `searches`):
what its trials and its winner's seeds train, and the pruning rule's link to the records."""
from __future__ import annotations

from pathlib import Path

from pipeline import rank_stability
from pipeline import real_search
from projects.core import records
from projects.core.records import RecordStore
from projects.pathology.config import PathologyConfig
from projects.pathology.real_data import PAPER, RECIPE_PRUNER, searches
from projects.pathology.study import STUDY

WON = dict(arch="unet", filters=16, depth=4, lr=1e-3, equalization="clahe", loss="bce_dice", lr_schedule="cosine",
           tta=True)


def _search(quick: bool = False, name: str = "search-monuseg"):
    (search,) = [s for s in searches(Path("/data"), quick) if s.name == name]
    return search


def test_the_pruner_judges_from_monusegs_minimum_resource_in_the_committed_records():
    table = rank_stability.curves(RecordStore(records.RECORDS / "rank-monuseg").all())
    k = rank_stability.min_resource(rank_stability.stability(table))
    assert k is not None, "the rank-monuseg records are committed (36 configurations)"
    assert RECIPE_PRUNER == f"median:warmup={k}"
    assert {s.pruner for s in searches(Path("/data"))} == {RECIPE_PRUNER}


def test_the_winner_is_trained_at_full_resolution_with_the_papers_protocol_and_its_searched_settings():
    block = _search().winner_block(WON)
    configs = STUDY.grid_configs(block.grids[0])
    assert [c.seed for c in configs] == [0, 1, 2]
    for c in configs:
        assert (c.tile_size, c.downsample, c.epochs, c.patience, c.batch_size) == (
            PAPER["tile_size"], 1, PAPER["epochs"], PAPER["patience"], PAPER["batch_size"])
        assert {k: getattr(c, k) for k in WON} == WON
        assert c.log_model  # its seeds are registry candidates, scored on the holdout
        assert c.data == "/data/monuseg"


def test_trials_run_on_the_shrunk_tiles_and_never_see_the_test_split():
    search = _search()
    assert "downsample=4" in search.base and "tile_size=64" in search.base
    assert search.objective.startswith("val_")
    quick = _search(quick=True)
    assert (quick.n_trials, quick.epochs) == (2, 1)
    assert [c.epochs for c in STUDY.grid_configs(quick.winner_block(WON).grids[0])] == [2]


def test_the_section_says_how_to_run_it_before_any_trial(tmp_path):
    text = real_search.section(tmp_path, _search(), STUDY)
    assert text.startswith("## search-monuseg")
    assert "pruner `median:warmup=" in text
    assert "Not measured yet: `python -m pipeline.real_search --data-root data --searches search-monuseg`" in text


def test_the_recipe_is_the_committed_journals_winner_and_each_variant_block_changes_one_thing():
    from pipeline.real_data import unit_settings
    from projects.pathology.real_data import RECIPE, STAIN_SIGMAS, blocks

    study = real_search.load(records.RECORDS, _search())
    assert study is not None, "results/records/searches/search-monuseg.journal is committed"
    assert dict(study.best_trial.params) == RECIPE
    (winner,) = STUDY.grid_configs(_search().winner_block(RECIPE).grids[0])[:1]
    (augmented,) = [b for b in blocks(Path("/data"), False) if b.name == "monuseg-augmented"]
    assert augmented.paired_with == ("search-monuseg-winner",)
    configs = [c for g in augmented.grids for c in STUDY.grid_configs(g)]
    assert sorted({c.stain_jitter for c in configs}) == sorted(STAIN_SIGMAS) and len(configs) == 6
    for c in configs:
        differ = {k for k, v in unit_settings(c).items() if unit_settings(winner).get(k) != v}
        assert differ <= {"rotate", "stain_jitter", "seed"} and c.rotate
    assert len({STUDY.grid_cell(c)[0] for c in configs}) == 6  # units keep distinct names
    (more,) = [b for b in blocks(Path("/data"), False) if b.name == "monuseg-more-training"]
    more_configs = [c for g in more.grids for c in STUDY.grid_configs(g)]
    assert len(more_configs) == 6 and len({STUDY.grid_cell(c)[0] for c in more_configs}) == 6
    for c in more_configs:
        differ = {k for k, v in unit_settings(c).items() if unit_settings(winner).get(k) != v}
        assert differ <= {"test_count", "val_fraction", "rotate", "stain_jitter", "seed"}
        assert (c.test_count, c.val_fraction) == (2, 0.15) and c.stain_jitter in (0, 0.2)


def test_the_augment_search_judges_every_trial_on_the_same_24_training_images_and_trains_its_winner_so():
    """search-monuseg-augment: the follow-ups' changes (split size, quarter turns, stain jitter)
    as searched axes; the split is fixed, so every trial is judged on the same validation images."""
    from projects.core import space as spaces
    from projects.pathology.real_data import AUGMENT_FIXED, MORE_TRAINING

    search = _search(name="search-monuseg-augment")
    searched = {p.name for p in spaces.parse_space("pathology", search.space, PathologyConfig).params if not isinstance(p, spaces.Fixed)}
    assert {"rotate", "stain_jitter", "equalization", "arch", "lr"} <= searched
    assert not searched & {"test_count", "val_fraction", "test_fraction", "seed"}
    won = dict(arch="elunet", filters=16, depth=3, lr=1e-3, equalization="none", rotate=True, stain_jitter=0.17)
    block = search.winner_block(won)
    assert block.name == "search-monuseg-augment-winner" and block.paired_with == ("search-monuseg-winner",)
    configs = STUDY.grid_configs(block.grids[0])
    assert [c.seed for c in configs] == [0, 1, 2] and len({STUDY.grid_cell(c)[0] for c in configs}) == 3
    for c in configs:
        assert {k: getattr(c, k) for k in won} == won
        assert {k: getattr(c, k) for k in AUGMENT_FIXED} == AUGMENT_FIXED
        assert (c.test_count, c.val_fraction) == (MORE_TRAINING["test_count"], MORE_TRAINING["val_fraction"])
        assert (c.tile_size, c.downsample, c.epochs, c.batch_size) == (256, 1, PAPER["epochs"], PAPER["batch_size"])
    assert all(f"{k}={str(v).lower() if isinstance(v, bool) else v}" in search.base for k, v in AUGMENT_FIXED.items())


def test_the_colour_search_keeps_the_augment_winners_model_and_searches_the_colour_draws():
    """search-monuseg-colour: the augment search's model (ELU-Net 16, depth 4, hist) fixed, the
    learning rate and the three online draws searched; its winner is paired with the augment
    search's winner, on the same 24 training images."""
    from projects.core import space as spaces
    from projects.pathology.real_data import COLOUR_FIXED, COLOUR_TRIALS, MORE_TRAINING

    augment = real_search.load(records.RECORDS, _search(name="search-monuseg-augment"))
    assert augment is not None, "results/records/searches/search-monuseg-augment.journal is committed"
    model = {k: augment.best_trial.params[k] for k in ("arch", "filters", "depth", "equalization")}
    assert {k: COLOUR_FIXED[k] for k in model} == model  # fails if the augment search's winner changes
    search = _search(name="search-monuseg-colour")
    space = spaces.apply_overrides(spaces.parse_space("pathology", STUDY.default_space, PathologyConfig),
                                   search.space, PathologyConfig)  # what the search CLI samples from
    searched = {p.name for p in space.params if not isinstance(p, spaces.Fixed)}
    assert searched == {"lr", "rotate", "stain_jitter", "hsv_jitter"} and search.n_trials == COLOUR_TRIALS
    block = search.winner_block(dict(lr=1e-3, rotate=True, stain_jitter=0.1, hsv_jitter=0.12))
    assert block.name == "search-monuseg-colour-winner" and block.paired_with == ("search-monuseg-augment-winner",)
    for c in STUDY.grid_configs(block.grids[0]):
        assert (c.arch, c.filters, c.depth, c.equalization, c.hsv_jitter) == ("elunet", 16, 4, "hist", 0.12)
        assert (c.test_count, c.val_fraction, c.tile_size) == (MORE_TRAINING["test_count"],
                                                               MORE_TRAINING["val_fraction"], PAPER["tile_size"])
