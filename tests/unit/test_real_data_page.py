"""results/REAL_DATA.md is rendered from the records alone: no data, no MLflow store, no
training (`python -m pipeline.real_data --render`)."""
from __future__ import annotations

from pipeline.real_data import holdout_line, main, sections
from projects.core.records import Record, RecordStore, unit_key
from projects.pathology.real_data import CELLS, PAPER


def _monuseg_record(arch: str, filters: int, depth: int, jaccard: float, commit: str,
                    cpu_kind: str | None = None) -> Record:
    settings = PAPER | {"arch": arch, "filters": filters, "depth": depth, "seed": 0}
    return Record(
        block="monuseg", unit=f"{arch}-n{filters}-d{depth}-s0", key=unit_key(settings, "d"), settings=settings,
        data_digest="d", holdout_digest="h", commit=commit, finished="2026-12-06T03:00:00+00:00", wall_s=1800,
        machine={"cpu": "AMD EPYC", "cores": 2, "load_1min_start": 1.0, "load_1min_end": 2.5}
        | ({"cpu_kind": cpu_kind} if cpu_kind else {}),
        metrics={"test_jaccard": jaccard - 0.02, "test_jaccard_ci95_low": jaccard - 0.05,
                 "test_jaccard_ci95_high": jaccard + 0.01, "epochs_run": 17.0, "model_size_mb": 0.2,
                 "cpu_total_s": 1.25, "test_n_units": 6.0},
        holdout={"jaccard": jaccard, "jaccard_ci95_low": jaccard - 0.03, "jaccard_ci95_high": jaccard + 0.02,
                 "dice": 0.8, "dice_ci95_low": 0.78, "dice_ci95_high": 0.82, "units": 14.0,
                 "baseline_all_background_jaccard": 0.0})


def test_the_page_is_rendered_from_records_without_data_or_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent' / 'x.db'}")  # never opened
    store = RecordStore(tmp_path / "records" / "monuseg")
    store.write(_monuseg_record("elunet", 4, 4, 0.612, "aaa111", cpu_kind="cpu-bf16"))
    store.write(_monuseg_record("unet", 32, 4, 0.655, "bbb222", cpu_kind="cpu"))
    out = tmp_path / "REAL_DATA.md"
    assert main(["--render", "--records", str(tmp_path / "records"), "--out", str(out)]) == 0
    got = sections(out.read_text())
    # the blocks, then the platform's searches (pipeline/real_search.py); no registry record: no registry section
    assert list(got) == ["mias-roi", "mias-film", "monuseg", "monuseg-searched", "monuseg-augmented", "monuseg-more-training",
                         "search-roi-normal-abnormal",
                         "search-roi-7class", "search-monuseg", "search-monuseg-augment",
                         "search-monuseg-colour"]
    assert all("Not measured yet" in got[name] for name in ("mias-roi", "search-roi-7class", "search-monuseg"))
    monuseg = got["monuseg"]
    assert "2 trained models, 1.0 h" in monuseg and "aaa111, bbb222" in monuseg and f"2 of the block's {len(CELLS)}" in monuseg
    assert "load average 1.0-2.5 when units started and ended" in monuseg
    # one model name, two speeds: the page says which kind of CPU (bf16 instructions or not) measured
    assert "on AMD EPYC, cpu (2 cores); AMD EPYC, cpu-bf16 (2 cores) at" in monuseg
    assert "CPU times come from 2 kinds of machine: compare them within one kind only." in monuseg
    rows = {r.split("|")[1].strip() + r.split("|")[2].strip(): r.split("|") for r in monuseg.splitlines()
            if r.startswith("| elunet") or r.startswith("| unet")}
    assert rows["elunet4"][5].strip() == "0.612 [0.582, 0.632]"  # holdout Jaccard with its interval
    assert rows["elunet4"][8].strip() == "0.867"  # Table V's ELU-Net (4, 4) beside it
    assert rows["unet32"][5].strip() == "0.655 [0.625, 0.675]" and rows["unet32"][13].strip() == "14"
    assert not (tmp_path / "absent").exists()


def test_an_empty_records_folder_renders_every_block_as_not_measured(tmp_path):
    out = tmp_path / "page.md"
    assert main(["--render", "--records", str(tmp_path / "none"), "--out", str(out)]) == 0
    got = sections(out.read_text())
    assert all("Not measured yet" in text for text in got.values()) and "monuseg" in got


def test_blocks_without_records_keep_their_earlier_section_marked_as_such(tmp_path):
    out = tmp_path / "REAL_DATA.md"
    out.write_text("# Results on the real public data sets\n\nold header\n\n## mias-roi\n\n| roi table |\n\n"
                   "## Registry\n\n- mammography-roi_benign_malignant: champion->v3\n")
    assert main(["--render", "--records", str(tmp_path / "records"), "--out", str(out)]) == 0
    got = sections(out.read_text())
    assert "| roi table |" in got["mias-roi"] and "measured before records existed" in got["mias-roi"]
    assert "Not measured yet" in got["monuseg"] and "old header" not in out.read_text()
    assert "champion->v3" in got["Registry"] and "before the registry's holdout-baseline gate" in got["Registry"]
    first = out.read_text()
    assert main(["--render", "--records", str(tmp_path / "records"), "--out", str(out)]) == 0
    assert out.read_text() == first  # the note is not added twice


def test_each_model_keeps_its_last_promotion_with_candidates(tmp_path):
    """A session's store holds only the blocks it measured: a model without candidates there
    keeps the record of its earlier promotion."""
    from pipeline.registry_records import REGISTRY, write
    from registry.report import MOVED, NONE, Decision, ModelReport

    root = tmp_path / "records"
    earlier = ModelReport("mammography-roi_normal_abnormal", "p@0", False, 5,
                          [Decision("champion", "max holdout_balanced_accuracy", None, "2", MOVED)], [])
    write(root, [earlier])
    moved = ModelReport("pathology-tumor", "p@1", False, 3, [Decision("champion", "max holdout_jaccard", None, "1", MOVED)], [])
    empty = ModelReport("mammography-roi_normal_abnormal", "p@1", False, 0, [Decision("champion", "r", None, None, NONE)], [])
    write(root, [moved, empty])
    assert sorted(r.key for r in RecordStore(root / REGISTRY).all()) == ["mammography-roi_normal_abnormal",
                                                                         "pathology-tumor"]
    out = tmp_path / "REAL_DATA.md"
    assert main(["--render", "--records", str(root), "--out", str(out)]) == 0
    registry = sections(out.read_text())["Registry"]
    assert "- pathology-tumor: champion->v1 (commit" in registry and "3 candidate runs" in registry
    assert "- mammography-roi_normal_abnormal: champion->v2 (commit" in registry and "5 candidate runs" in registry
    assert "no candidates" not in registry


def test_a_store_whose_champion_is_worse_on_the_same_holdout_leaves_the_record(tmp_path, capsys):
    """Sessions measure in their own stores: a later store holding only a weaker model must not
    replace the recorded champion, unless the holdout differs (never ranked across test sets)."""
    from pipeline.registry_records import REGISTRY, write
    from projects.core import tracking
    from registry.gates import Candidate
    from registry.report import MOVED, Decision, ModelReport

    def report(version: str, value: float, holdout: str, goal: str = "max") -> ModelReport:
        run = Candidate(f"run{version}abcdefgh", "1", f"elunet-s{version}", 0, {}, {tracking.TAG_HOLDOUT_DIGEST: holdout},
                        {}, version)
        decision = Decision("champion", "highest holdout_jaccard", None, version, MOVED, value=value,
                            target=run, goal=goal)
        return ModelReport("pathology-tumor", "p@1", False, 3, [decision], [])

    root = tmp_path / "records"
    champion = lambda: RecordStore(root / REGISTRY).get("pathology-tumor")  # noqa: E731
    write(root, [report("1", 0.62, "h")])
    assert champion().metrics == {"champion": 0.62} and champion().holdout_digest == "h"
    assert champion().settings["champion_run"] == "elunet-s1 (run1abcd)"  # versions are per store; runs say which
    write(root, [report("7", 0.60, "h")])  # worse on the same holdout: kept
    assert champion().metrics == {"champion": 0.62} and "champion->v1" in champion().settings["summary"]
    assert "registry record pathology-tumor kept: its champion scored 0.6200 on holdout h" in capsys.readouterr().err
    write(root, [report("8", 0.58, "other")])  # another holdout: not comparable, replaced
    assert champion().metrics == {"champion": 0.58} and champion().holdout_digest == "other"
    write(root, [report("9", 0.65, "other")])  # better: replaced
    assert champion().metrics == {"champion": 0.65} and "champion->v9" in champion().settings["summary"]
    write(root, [report("2", 0.70, "other", goal="min")])  # a loss: lower is better
    write(root, [report("3", 0.75, "other", goal="min")])
    assert champion().metrics == {"champion": 0.70}
    out = tmp_path / "REAL_DATA.md"
    assert main(["--render", "--records", str(root), "--out", str(out)]) == 0
    assert "; the champion is run `elunet-s2 (run2abcd)`" in sections(out.read_text())["Registry"]


def test_a_finished_unit_logs_its_holdout_numbers_with_intervals_and_no_baselines():
    holdout = {"jaccard": 0.6174, "jaccard_ci95_low": 0.583, "jaccard_ci95_high": 0.6484, "units": 14.0,
               "baseline_all_tumor_jaccard": 0.2154, "jaccard_pooled": 0.62}
    assert holdout_line(holdout, ("jaccard", "dice")) == ": holdout jaccard 0.617 [0.583, 0.648]"
    assert holdout_line({}, ("jaccard",)) == ""  # a unit without a logged model is not scored


def test_a_store_champion_replaces_the_recorded_one_only_if_better_by_the_paired_test(tmp_path, capsys):
    """Across stores the champion's significance rule is applied on the records: this store's
    champion against the recorded one, paired over the same 14 holdout images (their records)."""
    import numpy as np

    from pipeline.registry_records import REGISTRY, write
    from projects.core import tracking
    from projects.core.uncertainty import segmentation_scores
    from registry.gates import Candidate
    from registry.report import MOVED, Decision, ModelReport

    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.7, 14)
    images = [f"img{i:02d}" for i in range(14)]

    def unit(run_id: str, per_image: np.ndarray) -> None:
        tiles = np.repeat(per_image, 4)  # 4 tiles an image
        zero = np.zeros(len(tiles))
        scores = segmentation_scores(tiles, tiles, {"tp": zero, "fp": zero, "fn": zero, "tn": zero},
                                     np.repeat(images, 4))
        rec = _monuseg_record("elunet", 8, 3, float(per_image.mean()), "c")
        rec.key, rec.run_id, rec.holdout_units = run_id, run_id, scores.as_dict()
        RecordStore(tmp_path / "records" / "some-block").write(rec)

    def report(run_id: str, value: float) -> ModelReport:
        run = Candidate(run_id, "1", f"run-{run_id[:4]}", 0, {}, {tracking.TAG_HOLDOUT_DIGEST: "h"}, {}, "1")
        return ModelReport("pathology-tumor", "p@1", False, 3, [Decision(
            "champion", "highest holdout_jaccard", None, "1", MOVED, value=value, target=run, goal="max")], [])

    noisy = base + rng.normal(0.01, 0.05, 14)  # higher on average, but within the images' noise
    clear = base + rng.uniform(0.02, 0.04, 14)  # higher on every image
    for run_id, scores in (("aaaa1111", base), ("bbbb2222", noisy), ("cccc3333", clear)):
        unit(run_id, scores)
    root = tmp_path / "records"
    champion = lambda: RecordStore(root / REGISTRY).get("pathology-tumor")  # noqa: E731
    write(root, [report("aaaa1111", float(base.mean()))])
    assert noisy.mean() > base.mean()
    write(root, [report("bbbb2222", float(noisy.mean()))])
    assert champion().settings["champion_run"] == "run-aaaa (aaaa1111)"
    err = capsys.readouterr().err
    assert "registry record pathology-tumor kept: across stores: run-bbbb (bbbb2222) vs the recorded champion" in err
    assert "not better beyond chance at level 0.05" in err
    write(root, [report("cccc3333", float(clear.mean()))])
    assert champion().settings["champion_run"] == "run-cccc (cccc3333)"
    assert any("across stores" in line and "better at level 0.05" in line for line in champion().settings["table"])


def test_a_variant_row_names_only_the_changes_its_record_has():
    """A block whose older records predate a setting (no `rotate`, no `stain_jitter` key) beside
    newer ones that set it: the older rows name their real change, not 'stain jitter nan'."""
    import pandas as pd

    from projects.pathology.real_data import variant_table

    base = {"arch": "elunet", "filters": 8, "depth": 3, "test_count": 2, "val_fraction": 0.15,
            "holdout_jaccard": 0.62, "holdout_jaccard_ci": (0.6, 0.64), "holdout_dice": 0.75,
            "holdout_dice_ci": (0.7, 0.8), "jaccard": 0.6, "jaccard_ci": (0.55, 0.65), "epochs_run": 16.0,
            "size_mb": 0.18, "cpu_total_s": 0.5}
    rows = pd.DataFrame([base | {"seed": 0}, base | {"seed": 1, "rotate": True, "stain_jitter": 0.2}])
    changes = {line.split("|")[5].strip(): line.split("|")[4].strip() for line in variant_table(rows)[2:]}
    assert changes == {"0": "test split 2 images, validation 15%",
                       "1": "quarter turns, stain jitter 0.2, test split 2 images, validation 15%"}
