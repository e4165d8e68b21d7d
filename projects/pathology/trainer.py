"""One pathology run: tiles -> train -> per-tile Jaccard -> efficiency -> model, logged to
the active MLflow run. The entry point, the Table V grid and search trials all call
`run(config)`: the platform's trainer (projects/core/trainer.py) with this study's hooks.
"""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from projects.core import artifacts, runtime
from projects.core.errors import InputError
from projects.core.specs.holdout import HoldoutData
from projects.core.trainer import TestOutcome, Trainer
from projects.core.training import make_loader
from projects.pathology import data as seg_data
from projects.pathology import metrics as seg_metrics
from projects.pathology import preprocess, serving
from projects.pathology.augment import OnlineAugment
from projects.pathology.config import PathologyConfig
from projects.pathology.holdout import holdout_digest, holdout_images
from projects.pathology.models import build_model, min_input_multiple, model_family
from projects.pathology.models.tta import deployed

NAME = "pathology"
TASK = "tumor"


class TileDataset(Dataset):
    """uint8 tiles -> float tensors on access (keeps memory at 1/4 of float storage).

    Targets stack the mask and the valid-pixel map: padded pixels must not train or score.
    `augment` (training tiles only) draws a new view of each tile every time it is read.
    """

    def __init__(self, arrays: dict[str, np.ndarray], augment: OnlineAugment | None = None):
        self.images, self.masks, self.valid = arrays["images"], arrays["masks"], arrays["valid"]
        self.augment = augment if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, mask, valid = self.images[i], self.masks[i], self.valid[i]
        if self.augment is not None:
            image, mask, valid = self.augment(image, mask, valid)
        target = torch.stack([torch.from_numpy(mask).float(), torch.from_numpy(valid).float()])
        return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0), target


class MaskedBCE(nn.Module):
    """Binary cross-entropy (the paper's loss) on logits, averaged over valid pixels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask, valid = target[:, :1], target[:, 1:]
        loss = nn.functional.binary_cross_entropy_with_logits(logits, mask, reduction="none")
        return (loss * valid).sum() / valid.sum().clamp(min=1)


class MaskedBCEDice(MaskedBCE):
    """BCE plus (1 - soft Dice): the Dice term's gradient follows the overlap the study scores,
    not each pixel alike. Soft Dice over the batch's valid pixels (one ratio per batch, so a tile
    without nuclei does not give a 0/0)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask, valid = target[:, :1], target[:, 1:]
        prob = torch.sigmoid(logits.float()) * valid
        overlap = (prob * mask).sum()
        dice = (2 * overlap + 1.0) / (prob.sum() + (mask * valid).sum() + 1.0)
        return super().forward(logits, target) + (1 - dice)


LOSSES = {"bce": MaskedBCE, "bce_dice": MaskedBCEDice}


class MaskProbabilities(nn.Module):
    """What the logged MLflow model computes: (B, 3, H, W) RGB in [0, 1] -> tumour probability.

    Inputs are equalised tiles as in training (projects.pathology.preprocess.equalize).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(tiles))


@dataclass
class PreparedTiles:
    root: Path
    samples: list
    assignment: dict[str, str]
    arrays: dict[str, dict[str, np.ndarray]]
    digest: str
    cache_hit: bool
    cache_path: Path
    holdout: set[str] = field(default_factory=set)  # source images of the study's fixed holdout
    holdout_digest: str = "none"


def resolve_data_root(config: PathologyConfig) -> Path:
    if config.data == "embedded":
        from projects.embedded import ensure_paip

        return ensure_paip(n_images=config.embedded_images, size=config.embedded_size)
    root = Path(config.data).expanduser()
    if not root.exists():
        raise InputError(root, "data folder does not exist (use data=embedded for the generated set)")
    return root


def check_config(config: PathologyConfig) -> None:
    """What the config cannot check itself: the model builds and the tile can be halved to its
    depth. Decided before any run starts (the search uses it to reject a trial untrained)."""
    with torch.device("meta"):  # shapes only: validates arch/filters/depth/upsample for free
        build_model(config.arch, config.filters, config.depth, upsample=config.upsample)
    multiple = min_input_multiple(config.arch, config.depth)
    if config.tile_size % multiple:
        raise InputError("tile_size", f"{config.tile_size} cannot be halved {config.depth - 1} times "
                                      f"for {config.arch} depth {config.depth}: use a multiple of {multiple}")


def prepare_data(config: PathologyConfig) -> PreparedTiles:
    check_config(config)
    root = resolve_data_root(config)
    samples = seg_data.discover(root, mpp=config.mpp or None)
    held = holdout_images(samples, config.holdout_fraction)  # every run on this data sets them aside
    pool = [s for s in samples if s.id not in held]
    assignment = preprocess.split_images(pool, test_count=config.test_count or None,
                                         test_fraction=config.test_fraction,
                                         val_fraction=config.val_fraction, seed=config.seed)
    pre_cfg = preprocess.PreprocessConfig(tile_size=config.tile_size, equalization=config.equalization,
                                          augment_flips=config.augment_flips, mpp=config.mpp or None,
                                          downsample=config.downsample)
    prepared = preprocess.prepare(pool, assignment, pre_cfg, runtime.cache_dir() / "pathology")
    if held:  # a bad holdout image fails here too, before any run (and its tiles are cached)
        _holdout_tiles(samples, held, config)
    return PreparedTiles(root, pool, assignment, prepared.arrays, prepared.digest,
                         prepared.cache_hit, prepared.cache_path, held, holdout_digest(held))


def holdout_data(config: PathologyConfig) -> HoldoutData | None:
    """The study's fixed holdout, tiled and equalised as this config's runs do (no flips):
    what the registry scores every candidate on (None when holdout_fraction is 0)."""
    root = resolve_data_root(config)
    samples = seg_data.discover(root, mpp=config.mpp or None)
    held = holdout_images(samples, config.holdout_fraction)
    if not held:
        return None
    tiles = _holdout_tiles(samples, held, config)
    units = [str(s) for s in tiles["source"]]
    table = pd.DataFrame({"tile": range(len(units)), "image": units,
                          "tumour_pixels": tiles["masks"].reshape(len(units), -1).sum(1)})
    return HoldoutData(tiles_tensor(tiles["images"]).numpy(), tiles["masks"], units, holdout_digest(held),
                       str(root), table, valid=tiles["valid"])


def _holdout_tiles(samples, held: set[str], config: PathologyConfig) -> dict:
    pre_cfg = preprocess.PreprocessConfig(tile_size=config.tile_size, equalization=config.equalization,
                                          augment_flips=False, mpp=config.mpp or None,
                                          downsample=config.downsample)
    chosen = [s for s in samples if s.id in held]
    return preprocess.prepare(chosen, {s.id: "test" for s in chosen}, pre_cfg,
                              runtime.cache_dir() / "pathology").arrays["test"]


def _predict_probs(model: nn.Module, loader: DataLoader) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            out.append(torch.sigmoid(model(x))[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0,))


def _evaluator(threshold: float, loss_fn: nn.Module, tta: bool = False):
    """val_loss is the training loss (early stopping watches what is optimised); val_jaccard
    the per-tile Jaccard at the threshold; both of the model as it is deployed (tta)."""

    def evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
        model = deployed(model, tta)
        model.eval()
        total, n, jac = 0.0, 0, []
        with torch.inference_mode():
            for x, target in loader:
                logits = model(x)
                total += float(loss_fn(logits, target)) * len(x)
                n += len(x)
                pred = (torch.sigmoid(logits[:, 0]) > threshold).cpu().numpy()
                target = target.cpu().numpy()
                jac.append(seg_metrics.per_tile_jaccard(pred, target[:, 0], target[:, 1]))
        return {"loss": total / max(n, 1), "jaccard": float(np.concatenate(jac).mean()) if jac else float("nan")}

    return evaluate


class PathologyTrainer(Trainer):
    """The hooks of a pathology run: tiles in, a U-Net/ELU-Net per-pixel tumour probability out,
    scored by per-tile Jaccard (resampled by source image), against all-background/all-tumour."""
    study = NAME
    minus_baseline = {"jaccard": ("jaccard_all_background", "jaccard_all_tumor")}
    # The line printed when a run ends (str.format of config, test and base metrics).
    summary = ("{config.arch} n={config.filters} depth={config.depth}: test Jaccard (per tile) "
               "{test[jaccard]:.3f}, pooled {test[jaccard_pooled]:.3f} (all-background "
               "{base[jaccard_all_background]:.3f}, all-tumour {base[jaccard_all_tumor]:.3f})")
    size_with_optimizer = True  # Table V's model sizes are with Adam's state (Keras .h5)

    def prepare(self, config: PathologyConfig) -> PreparedTiles:
        return prepare_data(config)

    def describe(self, config: PathologyConfig, prepared: PreparedTiles) -> dict:
        return dict(task=TASK, arch=config.arch, augment=config.augment_flips,
                    split=f"test{config.test_count or config.test_fraction}-val{config.val_fraction}")

    def extra_tags(self, config: PathologyConfig, prepared: PreparedTiles) -> dict[str, str]:
        return {"depth": str(config.depth), "filters": str(config.filters)}

    def log_inputs(self, config: PathologyConfig, prepared: PreparedTiles) -> None:
        _log_inputs(prepared)

    def baselines(self, config: PathologyConfig, prepared: PreparedTiles) -> dict[str, float]:
        test = prepared.arrays["test"]
        return seg_metrics.trivial_baselines(test["masks"], test["valid"])

    def build_model(self, config: PathologyConfig, prepared: PreparedTiles) -> nn.Module:
        return build_model(config.arch, config.filters, config.depth, upsample=config.upsample)

    def loss(self, config: PathologyConfig, prepared: PreparedTiles) -> nn.Module:
        return LOSSES[config.loss]()

    def loaders(self, config: PathologyConfig, prepared: PreparedTiles, generator):
        arrays = prepared.arrays
        n_train = len(arrays["train"]["images"])
        augment = OnlineAugment(rotate=config.rotate, stain_sigma=config.stain_jitter, hsv_sigma=config.hsv_jitter)
        train = make_loader(TileDataset(arrays["train"], augment), config.train, shuffle=True, generator=generator,
                            drop_last=n_train > config.batch_size)
        val = make_loader(TileDataset(arrays["val"]), config.train) if len(arrays["val"]["images"]) else None
        return train, val

    def evaluator(self, config: PathologyConfig, prepared: PreparedTiles):
        return _evaluator(config.threshold, LOSSES[config.loss](), config.tta)

    def family(self, config: PathologyConfig) -> str:
        return model_family(config.arch)

    def deployed(self, config: PathologyConfig, model: nn.Module) -> nn.Module:
        return deployed(model, config.tta)

    def epoch_hook(self, config: PathologyConfig, prepared: PreparedTiles, model: nn.Module):
        arrays = prepared.arrays  # the same few tiles, predicted after every epoch (the UI's image slider)
        overlays = epoch_overlays(model, arrays["val"] if len(arrays["val"]["images"]) else arrays["test"],
                                  config.threshold)
        return lambda epoch, metrics: overlays(epoch)

    def test(self, config: PathologyConfig, prepared: PreparedTiles, model: nn.Module) -> TestOutcome:
        tiles = prepared.arrays["test"]
        truth, valid = tiles["masks"], tiles["valid"]
        pred = _predict_probs(model, DataLoader(TileDataset(tiles), batch_size=config.batch_size)) > config.threshold
        test = seg_metrics.segmentation_metrics(pred, truth, valid)
        # The paper times (and scores) a sample of cpu_predict_n test tiles.
        sample = np.random.default_rng(config.seed).choice(len(pred), size=min(config.cpu_predict_n, len(pred)),
                                                           replace=False)
        test[f"jaccard_sample{len(sample)}"] = seg_metrics.segmentation_metrics(
            pred[sample], truth[sample], valid[sample])["jaccard"]
        # Resampled by source image: the tiles of one image are one observation.
        units = seg_metrics.unit_scores(pred, truth, valid, tiles["source"])
        return TestOutcome(test, units, {"pred": pred, "sample": sample})

    def timed_inputs(self, config: PathologyConfig, prepared: PreparedTiles, outcome: TestOutcome) -> torch.Tensor:
        return tiles_tensor(prepared.arrays["test"]["images"][outcome.details["sample"]])

    def log_artifacts(self, config: PathologyConfig, prepared: PreparedTiles, outcome: TestOutcome,
                      folder: Path) -> None:
        tiles = prepared.arrays["test"]
        overlay_grid(tiles["images"], tiles["masks"], outcome.details["pred"], folder / "test_overlays.png",
                     seed=config.seed)
        mlflow.log_artifact(str(folder / "test_overlays.png"))

    def log_candidate(self, config: PathologyConfig, prepared: PreparedTiles, model: nn.Module,
                      outcome: TestOutcome) -> None:
        serving.log_tumour_model(model, config, prepared.arrays["test"]["images"][outcome.details["sample"]][:2])


TRAINER = PathologyTrainer()
run = TRAINER.run_training


def _log_inputs(prepared: PreparedTiles) -> None:
    arrays = prepared.arrays
    counts = {p: int(len(arrays[p]["images"])) for p in ("train", "val", "test")}
    n_images = {p: sorted({sid for sid, s in prepared.assignment.items() if s == p}) for p in ("train", "val", "test")}
    mlflow.log_params({f"n_{p}_tiles": counts[p] for p in counts}
                      | {f"n_{p}_images": len(n_images[p]) for p in n_images}
                      | {"n_holdout_images": len(prepared.holdout), "data_root": str(prepared.root),
                         "preprocess_cache_hit": prepared.cache_hit})
    if counts["train"] == 0 or counts["test"] == 0:
        raise InputError(prepared.root, f"no training or test tiles after the split ({counts})")
    _log_split(prepared)


def _log_split(prepared: PreparedTiles) -> None:
    table = pd.DataFrame([{"image_id": s.id, "split": prepared.assignment[s.id], "mpp": s.mpp,
                           "image": s.image_path.name} for s in prepared.samples]
                         + [{"image_id": i, "split": "holdout (never used here)"} for i in sorted(prepared.holdout)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "assignment.csv"
        table.to_csv(path, index=False)
        mlflow.log_artifact(str(path), "split")
    for part in ("train", "test"):
        ds = artifacts.dataset_from_table(table[table["split"] == part], source=str(prepared.root),
                                     name="pathology-tiles", digest=prepared.digest)
        mlflow.log_input(ds, context=part)


def tiles_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def log_probability_model(model: nn.Module, example_tiles: np.ndarray) -> None:
    if len(example_tiles) < 2:  # batch 2 keeps the batch dimension dynamic in torch.export
        example_tiles = np.repeat(example_tiles, 2, 0)
    artifacts.log_candidate_model(MaskProbabilities(model), tiles_tensor(example_tiles).numpy())


def overlay_grid(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, path: Path,
                 n: int = 8, seed: int = 0) -> None:
    """Test tiles with the ground truth outlined in green and the prediction in red/overlay."""
    if len(images) == 0:
        return
    picks = overlay_picks(truth, n, seed)
    cv2.imwrite(str(path), cv2.cvtColor(overlay_strip(images[picks], truth[picks], pred[picks]), cv2.COLOR_RGB2BGR))


def overlay_picks(truth: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """The tiles worth looking at: those with the most tumour (empty tiles show nothing)."""
    rng = np.random.default_rng(seed)
    return np.argsort(-truth.reshape(len(truth), -1).sum(1) - rng.random(len(truth)))[:n]


def overlay_strip(images: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(tile | overlay) pairs, one per row: prediction in red, true tumour outlined in green."""
    cells = []
    for i in range(len(images)):
        tile = images[i].copy()
        red = pred[i].astype(bool)
        tile[red] = (0.55 * tile[red] + 0.45 * np.array([255, 0, 0])).astype(np.uint8)
        contours, _ = cv2.findContours(truth[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(tile, contours, -1, (0, 200, 0), 1)
        cells.append(np.concatenate([images[i], tile], axis=1))
    return np.concatenate(cells, axis=0)


def epoch_overlays(model: nn.Module, tiles: dict[str, np.ndarray], threshold: float, n: int = 3,
                   size: int = 128) -> Callable[[int], None]:
    """A per-epoch hook: the same few validation tiles predicted by the model of that epoch,
    logged as an image with the epoch as its step (the run page's image slider shows learning)."""
    picks = overlay_picks(tiles["masks"], n) if len(tiles["images"]) else np.zeros(0, int)
    images = np.stack([cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) for t in tiles["images"][picks]]) \
        if len(picks) else None
    truth = tiles["masks"][picks]

    def log(epoch: int) -> None:
        if images is None:
            return
        device = next(model.parameters()).device
        with torch.no_grad():
            probs = torch.sigmoid(model(tiles_tensor(tiles["images"][picks]).to(device)))[:, 0].float().cpu().numpy()
        pred = np.stack([cv2.resize((p > threshold).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
                         for p in probs])
        small_truth = np.stack([cv2.resize(t.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
                                for t in truth])
        # synchronous: MLflow's default for stepped images is an async queue whose threads (a
        # polling loop and two pools) live as long as the process caches the run's artifact
        # repository (up to 1024 runs). One process that trains many runs (a grid, a search,
        # the test suite) gathered hundreds of such threads and slowed down with them.
        mlflow.log_image(overlay_strip(images, small_truth, pred), key="val_overlays", step=epoch, synchronous=True)

    return log
