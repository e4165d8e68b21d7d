"""The logged model a user applies: an MLflow pyfunc that takes the images people hold
(encoded PNG/JPEG/TIFF/PGM bytes, base64 over REST) and owns its preprocessing.

Each study subclasses `ImageModel` (projects.<study>.serving) with two functions: how one raw
image becomes the network's input batch, and how the batch's output becomes the answer. The
network is a callable on float32 arrays, so the same model runs eager PyTorch (the weights
logged inside the model) or an ONNX Runtime session (`-P runtime=onnx`).

Two input forms, one model, both through pyfunc's `predict`:
- raw: a DataFrame with an `image` column of encoded bytes (base64 text over REST) plus the
  study's columns: what `mlflow models serve`, `-e predict` and users hand over;
- prepared: a float32 (B, C, H, W) batch preprocessed as in training: what the registry's
  holdout scoring and smoke gate hand over (unchanged since models took only tensors).
MLflow enforces an input schema before the model sees its input and cannot describe two
forms (a column schema turns a 4-D array into a DataFrame and fails), so the signature holds
the outputs and params only; the inputs are described in the metadata (`inputs`) and in
docs/use-the-champion.md, and the model checks them itself (one line naming the problem).

Logged as models-from-code (a three-line script importing the study's class): no pickled
code; the PyTorch state_dict and the settings (architecture, preprocessing) as artifacts.
"""
from __future__ import annotations

import base64
import binascii
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from projects.core import artifacts
from projects.core.errors import InputError
from projects.core.tracking import MODEL_ARTIFACT, TAG_CANDIDATE

WEIGHTS = "weights"  # the artifact key of the state_dict inside the logged model
# The model's settings (architecture, preprocessing) as an artifact, not MLflow's model_config:
# log_model copies model_config into the run's params, where keys like `tta` collide.
SETTINGS = "settings"
PREPARED_INPUT = "prepared_input"  # metadata key: C x H x W of the prepared form (marks an image model)
INTENDED_USE = "research only; not for clinical use"
Network = Callable[[np.ndarray], np.ndarray]  # float32 batch -> float32 outputs


def image_bytes(value: Any, where: object = "image") -> bytes:
    """Encoded image bytes from bytes or a base64 string (REST clients send text)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise InputError(where, f"not base64-encoded image bytes: {exc}") from None
    raise InputError(where, f"expected encoded image bytes, got {type(value).__name__}")


def torch_network(module) -> Network:
    """An eager PyTorch module as a Network (no autograd, CPU threads as configured)."""
    import torch

    module = module.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().numpy()

    return run


def onnx_network(onnx_path: str | Path) -> Network:
    """An ONNX Runtime session (CPU) as a Network."""
    from projects.core.onnx_runtime import make_session, run_session

    session = make_session(onnx_path)
    return lambda batch: run_session(session, batch)


class ImageModel(mlflow.pyfunc.PythonModel):
    """Base of the studies' logged models; subclasses implement `build_module` and
    `predict_rows`."""

    config: dict
    network: Network
    kind = "classification"  # or "segmentation": what `-e predict` writes (CSV or mask images)

    # ----------------------------------------------------------------- study hooks
    def build_module(self, config: dict):
        """The probability-returning nn.Module of this config, weights not loaded yet."""
        raise NotImplementedError

    def predict_rows(self, frame, params: dict) -> Any:
        """The answer for a raw-form DataFrame (one row per image)."""
        raise NotImplementedError

    def prepared_shape(self) -> tuple[int, ...]:
        """One prepared input's shape (C, H, W): what the registry and the ONNX export feed."""
        raise NotImplementedError

    def benchmark_input(self) -> tuple[Any, str]:
        """A raw-form DataFrame of one typical image, and its description (benchmarks)."""
        raise NotImplementedError

    def display_image(self, value, where: object = "image") -> np.ndarray:
        """The input as an RGB array, for overlays (segmentation models)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- pyfunc
    def load_context(self, context) -> None:
        import torch

        config = json.loads(Path(context.artifacts[SETTINGS]).read_text())
        module = self.build_module(config)
        state = torch.load(context.artifacts[WEIGHTS], map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        self.module = module.eval()  # kept for the ONNX export at promotion (registry.export)
        self.use(config, torch_network(module))

    def use(self, config: dict, network: Network) -> "ImageModel":
        """Set the config and network directly (ONNX runtime, tests); returns self."""
        self.config, self.network = dict(config), network
        return self

    # The hint is a DataFrame, one of the types MLflow does not validate against: without a hint
    # every process that loads the model printed MLflow's "add type hints" warning, and a
    # validated hint cannot say "DataFrame of images or a float (B, C, H, W) batch".
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        if isinstance(model_input, np.ndarray) and model_input.dtype.kind == "f" and model_input.ndim == 4:
            return self.predict_prepared(model_input)
        if isinstance(model_input, np.ndarray):
            raise InputError("input", f"expected a DataFrame with an `image` column or a float32 (B, C, H, W) "
                                      f"batch, got a {model_input.dtype} array of shape {model_input.shape}")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            raise InputError("image", "the input has no `image` column (encoded image bytes, base64 over REST)")
        return self.predict_rows(frame, dict(params or {}))

    def predict_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities of a batch preprocessed as in training (the registry's form)."""
        return self.network(np.asarray(batch, dtype=np.float32))


def image_model(pyfunc_model) -> ImageModel | None:
    """The ImageModel inside a loaded pyfunc model (None for other models, e.g. mlflow.pytorch)."""
    try:
        inner = pyfunc_model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - MLflow raises its own error for non-PythonModel flavors
        return None
    return inner if isinstance(inner, ImageModel) else None


def _code_file(folder: Path, module: str, cls: str) -> Path:
    """The models-from-code script: imports the study's class from the installed project."""
    path = folder / "image_model.py"
    path.write_text(f"# Logged by projects.core.serving: the model is {module}.{cls}.\n"
                    f"from mlflow.models import set_model\n\nfrom {module} import {cls}\n\n"
                    f"set_model({cls}())\n")
    return path


def log_image_model(model_cls: type[ImageModel], module, config: dict, signature, input_example,
                    metadata: dict) -> None:
    """Log `module`'s weights as the run's candidate MLflow model of class `model_cls`.

    input_example: a small raw-form DataFrame (a tiny encoded image), so the logged model is
    about its weights' size (full tiles as examples made 19 MB of a 24 MB model). MLflow
    reloads the saved model and predicts that example (pyfunc.log_model has no switch to skip
    it): on a tiny image this costs well under a second and proves the raw path works.
    """
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "state_dict.pt"
        torch.save(module.state_dict(), weights)
        settings = Path(tmp) / "settings.json"
        settings.write_text(json.dumps(config, indent=1))
        mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=str(_code_file(Path(tmp), model_cls.__module__, model_cls.__name__)),
            artifacts={WEIGHTS: str(weights), SETTINGS: str(settings)}, signature=signature,
            input_example=input_example, metadata={"intended_use": INTENDED_USE} | metadata,
            pip_requirements=artifacts.model_pip_requirements() + ["pandas", "opencv-python-headless"])
    mlflow.set_tag(TAG_CANDIDATE, "true")


def run_facts(prefixes: tuple[str, ...] = ("test_",)) -> dict:
    """What the active run knows at logging time: its data digest and the test metrics with
    their intervals (holdout metrics come at promotion, in the version's description)."""
    run = mlflow.active_run()
    if run is None:
        return {}
    data = mlflow.MlflowClient().get_run(run.info.run_id).data
    return {"training_data_digest": data.tags.get("dataset_digest", ""),
            "metrics": {k: v for k, v in sorted(data.metrics.items()) if k.startswith(prefixes)}}


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise InputError("image", f"cannot encode a {image.dtype} {image.shape} array as PNG")
    return buf.tobytes()
