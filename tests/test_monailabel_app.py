"""The MONAI Label app on a real server (127.0.0.1): /info/, /infer and /train for the segmentation and
classification bundles, with labels from the datastore.

Needs the ``monailabel`` extra, which has its own environment (README, "MONAI Label"); elsewhere these
tests are skipped, and with ``ESSA_REQUIRE_MONAILABEL=1`` (set by CI in that environment) a missing
MONAI Label is an error instead of a skip.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if os.environ.get("ESSA_REQUIRE_MONAILABEL") == "1":
    import monailabel  # noqa: F401  (fails loudly where the tests must run)
else:
    pytest.importorskip("monailabel", reason="MONAI Label is not installed (pip install -e '.[monailabel]')")
import requests  # noqa: E402  (a MONAI Label dependency)

pytestmark = pytest.mark.monailabel

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "essa_monai" / "monailabel_app"
TINY = {"backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "img_size": 28, "decoder_channels": 16,
        "batch_size": 2, "num_workers": 0, "cache_rate": 0.0, "random_init_warning": False}
CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _studies(demo: Path, out: Path) -> tuple[list[str], dict[str, str]]:
    """Six lesion images with masks already in labels/final (as if annotated earlier), and four
    diagnosis images to be labelled through the API. Returns (segmentation ids, {classification id: class})."""
    isic = demo / "isic2018"
    (out / "labels" / "final").mkdir(parents=True)
    seg_ids = []
    for image in sorted((isic / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[:6]:
        shutil.copy(image, out / image.name)
        mask = isic / "ISIC2018_Task1_Training_GroundTruth" / f"{image.stem}_segmentation.png"
        shutil.copy(mask, out / "labels" / "final" / f"{image.stem}.png")
        seg_ids.append(image.stem)
    with open(isic / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv") as f:
        rows = list(csv.DictReader(f))[:4]
    cls_ids = {}
    for row in rows:
        shutil.copy(isic / "ISIC2018_Task3_Training_Input" / f"{row['image']}.jpg", out / f"dx_{row['image']}.jpg")
        cls_ids[f"dx_{row['image']}"] = next(c for c in CLASSES if float(row[c]) == 1.0)
    return seg_ids, cls_ids


@pytest.fixture(scope="module")
def server(tiny_bundle_project, tmp_path_factory):
    project, demo = tiny_bundle_project
    tmp = tmp_path_factory.mktemp("monailabel")
    studies = tmp / "studies"
    seg_ids, cls_ids = _studies(demo, studies)
    port = _free_port()
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port),
           "--conf", "models", "isic_apla,isic_cls_apla", "--conf", "bundles", str(project / "bundles"),
           "--conf", "bundle_overrides", json.dumps(TINY), "--conf", "sam2", "false"]
    log = open(tmp / "server.log", "w")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def log_text() -> str:
        log.flush()
        return (tmp / "server.log").read_text()

    def log_tail() -> str:
        return log_text()[-6000:]

    deadline = time.time() + 240
    while True:
        if process.poll() is not None:
            pytest.fail(f"MONAI Label server exited with {process.returncode}:\n{log_tail()}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.time() > deadline:
            process.kill()
            pytest.fail(f"MONAI Label server did not answer within 240 s:\n{log_tail()}")
        time.sleep(1)
    yield {"url": url, "studies": studies, "seg_ids": seg_ids, "cls_ids": cls_ids, "log": log_text,
           "log_tail": log_tail, "workspace": studies / ".essa_monai" / "bundles", "project": project}
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def _train(server, model: str, **params) -> dict:
    url = server["url"]
    response = requests.post(f"{url}/train/{model}", json={"max_epochs": 1, "val_split": 0.25, "device": "cpu",
                                                           **params}, timeout=30)
    assert response.status_code == 200, response.text
    deadline = time.time() + 420
    while time.time() < deadline:
        status = requests.get(f"{url}/train/", timeout=10).json()
        if status.get("status") in ("DONE", "ERROR", "STOPPED"):
            assert status["status"] == "DONE", f"{model} training {status['status']}:\n{server['log_tail']()}"
            return status
        time.sleep(2)
    pytest.fail(f"{model} training did not finish in 420 s:\n{server['log_tail']()}")


def test_info_lists_trained_models_and_every_trainer(server):
    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    assert info["name"] == "essa-monai"
    assert set(info["trainers"]) == {"isic_apla", "isic_cls_apla"}
    cls_trained = (server["workspace"] / "isic_cls_apla" / "models" / "model.pt").is_file()
    assert set(info["models"]) == {"isic_apla"} | ({"isic_cls_apla"} if cls_trained else set())
    assert info["models"]["isic_apla"]["type"] == "segmentation"
    assert info["models"]["isic_apla"]["labels"] == {"lesion": 1}
    assert info["datastore"]["total"] == 10


def _infer_mask(server, model: str, image_id: str) -> np.ndarray:
    response = requests.post(f"{server['url']}/infer/{model}", params={"image": image_id, "output": "image"},
                             timeout=120)
    assert response.status_code == 200, f"{response.text}\n{server['log_tail']()}"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_segmentation_infer_train_infer(server):
    image_id = server["seg_ids"][0]
    width, height = Image.open(server["studies"] / f"{image_id}.jpg").size
    mask = _infer_mask(server, "isic_apla", image_id)
    assert mask.shape == (height, width)
    assert set(np.unique(mask).tolist()) <= {0, 1}

    model_file = server["workspace"] / "isic_apla" / "models" / "model.pt"
    source_model = server["project"] / "bundles" / "isic_apla" / "models" / "model.pt"
    before, source_before = model_file.read_bytes(), source_model.read_bytes()
    assert before == source_before  # served: the bundle's trained model
    _train(server, "isic_apla")
    assert model_file.read_bytes() != before  # training replaced the served model ...
    assert source_model.read_bytes() == source_before  # ... and left the bundle's own model alone
    assert _infer_mask(server, "isic_apla", image_id).shape == (height, width)
    assert "continuing from" in server["log"]()


def test_classification_labels_train_then_infer(server):
    url = server["url"]
    assert "isic_cls_apla" not in requests.get(f"{url}/info/", timeout=30).json()["models"]  # no model yet
    for image_id, name in server["cls_ids"].items():
        label = io.BytesIO(json.dumps({"label": name}).encode())
        response = requests.put(f"{url}/datastore/label", params={"image": image_id, "tag": "final"},
                                files={"label": (f"{image_id}.json", label, "application/json")}, timeout=30)
        assert response.status_code == 200, response.text

    _train(server, "isic_cls_apla")
    log = server["log"]()
    assert "not a JSON class label" in log  # the lesion masks are skipped by the classifier ...
    info = requests.get(f"{url}/info/", timeout=30).json()
    assert set(info["models"]) == {"isic_apla", "isic_cls_apla"}  # ... and its first model is now served

    image_id = next(iter(server["cls_ids"]))
    response = requests.post(f"{url}/infer/isic_cls_apla", params={"image": image_id, "output": "json"}, timeout=120)
    assert response.status_code == 200, f"{response.text}\n{server['log_tail']()}"
    result = response.json()
    assert [p["label"] for p in result["prediction"]] == CLASSES
    assert sum(p["score"] for p in result["prediction"]) == pytest.approx(1.0, abs=1e-4)
    assert len(result["predicted"]) == 1 and result["predicted"][0] in CLASSES


def test_bad_upload_is_an_error_and_the_server_keeps_serving(server, tmp_path):
    url = server["url"]
    files = {"file": ("not_an_image.jpg", io.BytesIO(b"this is text, not a JPEG"), "image/jpeg")}
    response = requests.post(f"{url}/infer/isic_apla", files=files, timeout=60)
    assert response.status_code >= 400
    assert requests.get(f"{url}/info/", timeout=30).status_code == 200
