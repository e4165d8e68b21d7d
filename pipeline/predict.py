"""`mlflow run . -e predict -P model=models:/pathology-tumor@champion -P input=<file or folder>
-P out=<folder>`: apply a logged model to image files.

Segmentation models write <name>_mask.png (0/255) and <name>_overlay.png (tumour in red) per
image and masks.csv (size, tumour fraction); classifiers write predictions.csv (a column per
class and the most probable class). An ROI classifier reads its regions from a CSV given as
`input` (columns image, x, y, radius: the Info.txt convention, docs/use-the-champion.md).

A file that cannot be read is one `error: <file>: <why>` line; the others are still
predicted, the summary counts both, and the exit status is 1 when any file failed (2 for a
bad model or parameter). `runtime=onnx` runs the ONNX model that promotion logged beside the
champion (registry.export) with the same pre- and postprocessing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from projects.core import serving
from projects.core.cli import entry_point
from projects.core.errors import InputError

RUNTIMES = ("torch", "onnx")
ONNX_TAG = "onnx_model_uri"  # on a registered version: where its ONNX model is (registry.export)


def load(model_uri: str, runtime: str) -> serving.ImageModel:
    """The ImageModel behind `model_uri`, its network eager PyTorch or ONNX Runtime."""
    import mlflow

    from projects.core import tracking

    tracking.setup_tracking()
    try:
        model = mlflow.pyfunc.load_model(model_uri, suppress_warnings=True)
    except Exception as exc:  # noqa: BLE001 - unknown name/alias/run: the user's input
        raise InputError("model", f"cannot load {model_uri}: {' '.join(str(exc).split())[:300]}") from None
    inner = serving.image_model(model)
    if inner is None:
        raise InputError("model", f"{model_uri} takes prepared tensors, not images (logged before issue 29): "
                                  "retrain it to get a model that reads image files")
    if runtime == "onnx":
        inner.use(inner.config, serving.onnx_network(onnx_file(model_uri)))
    return inner


def onnx_file(model_uri: str) -> Path:
    """The model.onnx logged for the registered version behind `model_uri`."""
    import mlflow

    version = registered_version(model_uri)
    uri = version.tags.get(ONNX_TAG) if version is not None else None
    if not uri:
        raise InputError("runtime", f"{model_uri} has no ONNX model: promotion exports one for each champion "
                                    "(`mlflow run . -e promote`); use runtime=torch otherwise")
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    found = sorted(folder.rglob("*.onnx"))
    if not found:
        raise InputError("runtime", f"{uri} holds no .onnx file")
    return found[0]


def registered_version(model_uri: str):
    """The ModelVersion of a models:/name@alias or models:/name/version URI (else None)."""
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/"):
        return None
    rest = model_uri[len("models:/"):]
    client = MlflowClient()
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, version = rest.partition("/")
    return client.get_model_version(name, version) if version.isdigit() else None


def input_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(path, "the folder holds no files")
        return files
    raise InputError(path, "no such file or folder")


def roi_rows(path: Path) -> list[tuple[Path, dict]]:
    """An ROI model's input: a CSV of image, x, y, radius (paths relative to the CSV)."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise InputError(path, "an ROI model reads a CSV of regions: columns image, x, y, radius "
                               "(Info.txt convention: 1024-px film, origin bottom-left)")
    table = pd.read_csv(path)
    missing = [c for c in ("image", "x", "y") if c not in table.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)} (expected image, x, y, radius)")
    return [(path.parent / str(r["image"]), {"x": [float(r["x"])], "y": [float(r["y"])],
                                            "radius": [float(r.get("radius", 0) or 0)]})
            for _, r in table.iterrows()]


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with predicted tumour tinted red (RGB)."""
    out = image.copy()
    red = mask.astype(bool)
    out[red] = (0.55 * out[red] + 0.45 * np.array([255, 0, 0])).astype(np.uint8)
    return out


def write_png(path: Path, rgb_or_grey: np.ndarray) -> None:
    import cv2

    image = cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2BGR) if rgb_or_grey.ndim == 3 else rgb_or_grey
    path.write_bytes(serving.encode_png(image))


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="models:/<name>@champion, runs:/<run>/model or a path")
    ap.add_argument("--input", required=True, help="an image file, a folder of them, or (ROI models) a CSV")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--runtime", default="torch", choices=RUNTIMES)
    ap.add_argument("--progress", default="true", help="show a progress bar (true/false)")
    return ap.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = parse(argv)
    source, out = Path(args.input).expanduser(), Path(args.out).expanduser()
    if not source.exists():  # before the model loads: seconds saved on a typo
        raise InputError(source, "no such file or folder")
    model = load(args.model, args.runtime)
    segmentation = model.kind == "segmentation"
    if model.config.get("input") == "roi":
        items = roi_rows(source)
    else:
        items = [(p, {}) for p in input_files(source)]
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], []
    bar = tqdm(items, desc="predict", unit="image", file=sys.stderr,
               disable=str(args.progress).lower() in ("0", "false", "no"))
    for path, extra in bar:
        try:
            data = path.read_bytes()
            result = model.predict_rows(pd.DataFrame({"image": [data]} | extra), {})
            if segmentation:
                mask = result["mask"].iloc[0]
                write_png(out / f"{path.stem}_mask.png", (mask * 255).astype(np.uint8))
                write_png(out / f"{path.stem}_overlay.png", overlay(model.display_image(data, path), mask))
                result = result.drop(columns=["mask"])
            rows.append({"file": str(path)} | extra_values(extra) | result.to_dict("records")[0])
        except (InputError, OSError) as exc:
            problem = exc.problem if isinstance(exc, InputError) else (exc.strerror or str(exc))
            bar.write(f"error: {path}: {problem}", file=sys.stderr)
            failed.append(path)
    table = out / ("masks.csv" if segmentation else "predictions.csv")
    pd.DataFrame(rows).to_csv(table, index=False)
    print(f"predicted {len(rows)} of {len(items)} input(s) with {args.model} ({args.runtime}) -> {table}"
          + (f"; {len(failed)} failed: {', '.join(p.name for p in failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def extra_values(extra: dict) -> dict:
    return {k: v[0] for k, v in extra.items()}


if __name__ == "__main__":
    sys.exit(main())
