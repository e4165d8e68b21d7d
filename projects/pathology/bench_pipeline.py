"""Data pipeline: the pathology preprocessing without and with its cache, and how much of a
training step waits for data.

1. Preprocessing: `projects.pathology.trainer.prepare_data`'s steps (discover the files, split
   by image, `preprocess.prepare`: decode, equalise, tile, flip-augment, cache) on the
   embedded PAIP set, once into an EMPTY cache folder (the first run: a miss that writes the
   cache) and once more into the same folder (a hit), interleaved over rounds, each round with
   a fresh folder. Ratio = first / cached (target: at least 10x). A hit maps the arrays and
   reads pages only when the loader touches them, so the reads one epoch makes are timed
   too (a separate row, and a second ratio that includes them). For comparison the former
   cache format is measured in the same rounds: un-flipped tiles in one compressed .npz,
   decompressed and flipped on every hit (5x in the run that made us replace it: zlib
   ~60% and the flips ~25% of a hit).
2. Data wait: the study's training loop (`projects.core.training.fit` over the study's
   `TileDataset` + `DataLoader`, as `projects.pathology.trainer.run` builds them) with the
   loader wrapped so the time spent in `next(loader)` is summed. Share = data wait / the
   loop's wall time (target: under 5%). Measured for the study's default model (ELU-Net
   (8,5), 256-px tiles, batch 8) and for a small search-trial model on 64-px tiles, where
   compute per batch is smallest and the loader matters most.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from projects.core.bench import Section, Table, load_average, median, metric_key

TARGET_CACHE_RATIO = 10.0
TARGET_WAIT_PCT = 5.0


@dataclass(frozen=True)
class Settings:
    rounds: int
    cases: tuple[tuple[str, int, int, int, int], ...]  # (arch, filters, depth, tile, batches)


def settings(quick: bool) -> Settings:
    if quick:
        return Settings(rounds=2, cases=(("elunet", 8, 5, 256, 2), ("elunet", 4, 3, 64, 30)))
    return Settings(rounds=4, cases=(("elunet", 8, 5, 256, 16), ("unet", 32, 5, 256, 8),
                                     ("elunet", 4, 3, 64, 200)))


def prepare_into(config, cache_dir: Path):
    """prepare_data's steps with an explicit cache folder (the study's own functions)."""
    from projects.pathology import data as seg_data
    from projects.pathology import preprocess
    from projects.pathology.trainer import resolve_data_root

    root = resolve_data_root(config)
    samples = seg_data.discover(root, mpp=config.mpp or None)
    assignment = preprocess.split_images(samples, test_count=config.test_count or None,
                                         test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                                         seed=config.seed)
    pre_cfg = preprocess.PreprocessConfig(tile_size=config.tile_size, equalization=config.equalization,
                                          augment_flips=config.augment_flips, mpp=config.mpp or None)
    return preprocess.prepare(samples, assignment, pre_cfg, cache_dir)


def former_save(prepared, path: Path) -> None:
    """The cache format before the memory-mapped one: un-flipped tiles, one compressed .npz."""
    import numpy as np

    flat = {}
    for split, fields in prepared.arrays.items():
        n = len(fields["source"]) // 4 if split == "train" else len(fields["source"])  # flips come last x3
        flat.update({f"{split}__{name}": np.asarray(a[:n]) for name, a in fields.items()})
    np.savez_compressed(path, **flat)


def _lookups(config) -> None:
    """What prepare() does before it can name its cache entry: discover, split, digest."""
    from projects.pathology import data as seg_data
    from projects.pathology import preprocess
    from projects.pathology.trainer import resolve_data_root

    root = resolve_data_root(config)
    samples = seg_data.discover(root, mpp=config.mpp or None)
    preprocess.split_images(samples, test_count=config.test_count or None, test_fraction=config.test_fraction,
                            val_fraction=config.val_fraction, seed=config.seed)
    seg_data.dataset_digest(samples)


def former_load(config, path: Path) -> dict:
    """The former hit: the lookups, decompress every array, recompute the flips."""
    import numpy as np

    from projects.pathology.preprocess import flip_augment

    _lookups(config)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["train__images"], arrays["train__masks"], arrays["train__valid"] = flip_augment(
        arrays["train__images"], arrays["train__masks"], arrays["train__valid"])
    return arrays


def _touch_all(prepared) -> None:
    """Read every pixel once (what one training epoch does): a mapped hit pays its reads here."""
    for fields in prepared.arrays.values():
        for array in fields.values():
            if len(array) and array.dtype.kind in "biu":  # one byte per 4 KiB page: every page read
                array.reshape(-1)[::4096].sum()


class TimedLoader:
    """Wraps a DataLoader; sums the seconds spent waiting in next() (fetch + collate)."""

    def __init__(self, loader):
        self.loader = loader
        self.wait_s = 0.0
        self.batches = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.wait_s += time.perf_counter() - t0
                return
            self.wait_s += time.perf_counter() - t0
            self.batches += 1
            yield batch


def data_wait(arch: str, filters: int, depth: int, tile: int, batches: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader, Subset

    from projects.pathology import trainer
    from projects.pathology.config import PathologyConfig
    from projects.pathology.models import build_model
    from projects.core.training import TrainConfig, fit, seed_everything

    config = PathologyConfig(arch=arch, filters=filters, depth=depth, tile_size=tile, progress=False)
    prepared = trainer.prepare_data(config)
    gen = seed_everything(0)
    dataset = trainer.TileDataset(prepared.arrays["train"])
    n = min(len(dataset), batches * config.batch_size)
    dataset = Subset(dataset, torch.randperm(len(dataset), generator=gen)[:n].tolist())
    loader = TimedLoader(DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=gen,
                                    drop_last=True))
    model = build_model(arch, filters, depth)
    result = fit(model, loader, None, trainer.MaskedBCE(), TrainConfig(epochs=1, batch_size=config.batch_size,
                 lr=config.lr, progress=False), evaluate=lambda m, l: {}, log=False)
    return {"wall_s": result.train_seconds, "wait_s": loader.wait_s, "batches": loader.batches,
            "step_s": result.train_seconds / max(loader.batches, 1),
            "wait_pct": 100 * loader.wait_s / result.train_seconds}


def run(quick: bool, experiment_id: str | None = None, log=print) -> Section:
    from projects.pathology.config import PathologyConfig

    cfg = settings(quick)
    sec = Section("data_pipeline")
    config = PathologyConfig(progress=False)  # the study's defaults: 256-px tiles, flips x4, hist. equalisation
    load_start = load_average()
    log(f"[benchmarks] data pipeline: preprocessing first vs cached, {cfg.rounds} rounds ...")
    first, cached, touched, former, info = [], [], [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        prepare_into(config, Path(tmp) / "warm")  # embedded data generated, files in the page cache
        for r in range(cfg.rounds):
            folder = Path(tmp) / f"round{r}"
            t0 = time.perf_counter()
            miss = prepare_into(config, folder)
            t1 = time.perf_counter()
            hit = prepare_into(config, folder)
            t2 = time.perf_counter()
            _touch_all(hit)
            t3 = time.perf_counter()
            assert not miss.cache_hit and hit.cache_hit, "cache did not behave as a cache"
            former_save(hit, folder / "former.npz")
            t4 = time.perf_counter()
            former_load(config, folder / "former.npz")
            t5 = time.perf_counter()
            first.append(t1 - t0)
            cached.append(t2 - t1)
            touched.append(t3 - t2)
            former.append(t5 - t4)
            info = {"tiles": sum(len(v["images"]) for v in hit.arrays.values()),
                    "cache_mb": sum(f.stat().st_size for f in miss.cache_path.iterdir()) / 1e6,
                    "former_mb": (folder / "former.npz").stat().st_size / 1e6}
    ratio = median(first) / median(cached)
    table = Table(f"Pathology preprocessing, embedded PAIP (24 images of 512px -> {info['tiles']} tiles of "
                  f"{config.tile_size}px incl. flips; cache {info['cache_mb']:.1f} MB on disk, former format "
                  f"{info['former_mb']:.1f} MB); {cfg.rounds} rounds", ["run", "median s", "min s", "max s"])
    table.add("first (decode, equalise, tile, flip, write cache)", median(first), min(first), max(first))
    table.add("cached (digest files, map the .npy files)", median(cached), min(cached), max(cached))
    table.add("  then reading every pixel once (one epoch's reads)", median(touched), min(touched), max(touched))
    table.add("former cache, for comparison (compressed .npz, flips recomputed)", median(former), min(former),
              max(former))
    table.notes.append(f"first / cached = {ratio:.1f}x (target >= {TARGET_CACHE_RATIO:g}x: "
                       f"{'met' if ratio >= TARGET_CACHE_RATIO else 'MISSED'}); counting the reads of one epoch "
                       f"{median(first) / (median(cached) + median(touched)):.1f}x; the former format "
                       f"{median(first) / median(former):.1f}x")
    sec.tables.append(table)
    sec.metrics.update({"data.preprocess_first_s": median(first), "data.preprocess_cached_s": median(cached),
                        "data.cache_speedup": ratio, "data.cached_read_all_s": median(touched),
                        "data.cache_speedup_with_reads": median(first) / (median(cached) + median(touched)),
                        "data.former_cached_s": median(former), "data.former_speedup": median(first) / median(former),
                        "data.cache_mb": info["cache_mb"], "data.former_cache_mb": info["former_mb"]})
    sec.headline.append(f"cached preprocessing {ratio:.1f}x faster than the first run (target >= {TARGET_CACHE_RATIO:g}x: "
                        f"{'met' if ratio >= TARGET_CACHE_RATIO else 'MISSED'}); "
                        f"{median(first) / (median(cached) + median(touched)):.1f}x with one epoch's reads")

    wait = Table("Share of training time waiting for data (study's TileDataset + DataLoader, num_workers=0)",
                 ["model", "tile px", "batches", "step s", "data wait ms / batch", "data wait %"])
    worst = 0.0
    for arch, filters, depth, tile, batches in cfg.cases:
        log(f"[benchmarks] data wait: {arch} ({filters},{depth}) {tile}px, {batches} batches ...")
        res = data_wait(arch, filters, depth, tile, batches)
        wait.add(f"{arch} ({filters},{depth})", tile, res["batches"], res["step_s"],
                 1000 * res["wait_s"] / max(res["batches"], 1), res["wait_pct"])
        key = metric_key("data", f"{arch}_{filters}_{depth}_{tile}")
        sec.metrics[key + ".wait_pct"] = res["wait_pct"]
        sec.metrics[key + ".step_s"] = res["step_s"]
        worst = max(worst, res["wait_pct"])
    wait.notes.append(f"load average {load_start} -> {load_average()}")
    sec.tables.append(wait)
    sec.metrics["data.wait_pct_worst"] = worst
    sec.headline.append(f"data wait at most {worst:.2f}% of training time (target < {TARGET_WAIT_PCT:g}%: "
                        f"{'met' if worst < TARGET_WAIT_PCT else 'MISSED'})")
    return sec


def main(argv: list[str] | None = None) -> None:
    import argparse

    from projects.core.cli import str2bool

    parser = argparse.ArgumentParser(description="Pathology data pipeline: cache and data wait")
    parser.add_argument("--quick", type=str2bool, default=True)
    args = parser.parse_args(argv)
    print(run(args.quick).render())


if __name__ == "__main__":
    import projects  # noqa: F401

    main()
