"""From champion to use (issue 29): smoke-sized models are trained and promoted, then the
champion answers the images people hold: over REST (`mlflow models serve`), through
`mlflow.pyfunc.load_model("models:/...@champion")`, through `-e predict` (a folder with one
corrupt file) and as its ONNX model, which promotion logged after checking it against eager."""
from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from projects.core import tracking
from projects.core.study import get_study
from registry import export
from registry import promote as P
from registry.policy import find_policy, load_policy

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PATHOLOGY, MAMMOGRAPHY = get_study("pathology"), get_study("mammography")
SEG, CLS = PATHOLOGY.model_name("tumor"), MAMMOGRAPHY.model_name("7class")


def train_and_promote(tmp_path) -> None:
    """One smoke-sized run per study, promoted under its policy minus the baseline gate (a
    1-epoch model need not beat the trivial predictors; what is tested is its use)."""
    seg = PATHOLOGY.config_cls.of(arch="elunet", filters=4, depth=3, embedded_images=8, embedded_size=256,
                                  tile_size=64, epochs=1, batch_size=8, lr=3e-3, patience=0, cpu_predict_n=4,
                                  onnx_timing=False, progress=False)
    cls = MAMMOGRAPHY.config_cls.of(arch="resnet10t", image_size=32, epochs=1, batch_size=32, lr=1e-3,
                                    cpu_predict_n=4, onnx_timing=False, progress=False)
    for study, config, name in ((PATHOLOGY, seg, SEG), (MAMMOGRAPHY, cls, CLS)):
        with tracking.study_run(study.experiment, f"use-{study.name}"):
            study.run(config)
        text = re.sub(r"  beats_baseline:.*?\n(    .*\n)+", "", find_policy(name).path.read_text())
        (tmp_path / f"{name}.yaml").write_text(text)
        report = P.promote_model(name, policy=load_policy(tmp_path / f"{name}.yaml"))
        assert any(d.alias == "champion" and d.after for d in report.decisions), report.table()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, payload: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def serve(name: str, port: int) -> subprocess.Popen:
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-3000:])
            time.sleep(1)
    proc.kill()
    raise AssertionError("mlflow models serve did not answer /ping in 180 s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 15)  # the server's own process group: uvicorn and its worker
    proc.wait(timeout=30)


def he_png(h: int, w: int) -> bytes:
    rng = np.random.default_rng(0)
    small = rng.integers(30, 230, (h // 10, w // 10, 3), dtype=np.uint8)
    return cv2.imencode(".png", cv2.resize(small, (w, h)))[1].tobytes()


def film_pgm_1024() -> bytes:
    """An embedded film brought to the original 1024-px size, as a binary PGM."""
    from projects.embedded import ensure_mias

    film = cv2.imread(str(sorted(ensure_mias(size=256).glob("*.pgm"))[0]), cv2.IMREAD_GRAYSCALE)
    return b"P5\n1024 1024\n255\n" + cv2.resize(film, (1024, 1024), interpolation=cv2.INTER_LINEAR).tobytes()


@pytest.mark.slow
def test_the_champion_answers_images(tmp_path):
    train_and_promote(tmp_path)
    image, film = he_png(500, 700), film_pgm_1024()
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731

    # REST: one server per champion, on a free local port
    port = free_port()
    proc = serve(SEG, port)
    try:
        answer = post(port, {"dataframe_split": {"columns": ["image"], "data": [[b64(image)]]}})["predictions"][0]
    finally:
        stop(proc)
    assert (answer["height"], answer["width"]) == (500, 700)
    assert np.asarray(answer["mask"]).shape == (500, 700) and set(np.unique(answer["mask"])) <= {0, 1}
    port = free_port()
    proc = serve(CLS, port)
    try:
        answer = post(port, {"dataframe_split": {"columns": ["image"], "data": [[b64(film)]]}})["predictions"][0]
    finally:
        stop(proc)
    names = ["ARCH", "ASYM", "CALC", "CIRC", "MISC", "NORM", "SPIC"]  # data.CLASSES_7
    assert set(names) <= set(answer) and answer["class"] in names
    assert abs(sum(answer[n] for n in names) - 1) < 1e-4

    # the same through pyfunc
    seg = mlflow.pyfunc.load_model(f"models:/{SEG}@champion").predict(pd.DataFrame({"image": [image]}))
    assert seg["mask"][0].shape == (500, 700)
    cls = mlflow.pyfunc.load_model(f"models:/{CLS}@champion").predict(pd.DataFrame({"image": [film]}))
    assert list(cls.columns) == names + ["class"] and cls["class"][0] in names

    # promotion logged the ONNX model, checked against eager
    client = MlflowClient()
    for name in (SEG, CLS):
        tags = client.get_model_version_by_alias(name, "champion").tags
        assert tags.get(export.ONNX_TAG, "").startswith("models:/"), tags
        assert float(tags[export.DIFF_TAG]) <= export.TOLERANCE
        card = client.get_model_version_by_alias(name, "champion").description  # the model card leads it
        for needed in ("not for clinical use", "dataset_digest", "Holdout (evaluation run", "- baseline: ",
                       "Size and CPU time", "ONNX model: models:/", "**champion**"):
            assert needed in card, card

    # -e predict on a folder with one corrupt file, eager and ONNX
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(image)
    (folder / "b.png").write_bytes(he_png(130, 90))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}"}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"out-{runtime}"
        done = subprocess.run([str(BIN / "mlflow"), "run", str(REPO), "-e", "predict", "--env-manager", "local",
                               "-P", f"model=models:/{SEG}@champion", "-P", f"input={folder}", "-P", f"out={out}",
                               "-P", f"runtime={runtime}"], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode != 0, done.stderr[-2000:]
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and "broken.png" in errors[0], done.stderr[-3000:]
        assert "predicted 2 of 3" in done.stderr
        for stem, shape in (("a", (500, 700)), ("b", (130, 90))):
            assert cv2.imread(str(out / f"{stem}_mask.png"), cv2.IMREAD_GRAYSCALE).shape == shape
            assert cv2.imread(str(out / f"{stem}_overlay.png")).shape == (*shape, 3)
        assert len(pd.read_csv(out / "masks.csv")) == 2
    eager = cv2.imread(str(tmp_path / "out-torch" / "a_mask.png"), cv2.IMREAD_GRAYSCALE)
    onnx = cv2.imread(str(tmp_path / "out-onnx" / "a_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert (eager != onnx).mean() < 1e-3  # the same masks but for pixels at the threshold
