"""The MONAI Label side of the bundles that needs no MONAI Label: standalone served configs, model sync,
datastore labels, and the served inference pipeline run by hand (the real server is tested in
test_monailabel_app.py, in the MONAI Label environment)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from essa_monai.bundle_paths import working_directory
from essa_monai.inference import EXIT_OK, infer
from essa_monai.monailabel_app.datastore_labels import LabelError, read_class_label, training_items
from essa_monai.monailabel_app.served_bundle import flatten_config, prepare_served_bundle

ROOT = Path(__file__).resolve().parents[1]
TINY = {"backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "img_size": 28, "decoder_channels": 16}


def _strings(config):
    if isinstance(config, dict):
        for v in config.values():
            yield from _strings(v)
    elif isinstance(config, list):
        for v in config:
            yield from _strings(v)
    elif isinstance(config, str):
        yield config


def test_flatten_config_replaces_every_macro_and_stands_alone(tmp_path):
    flat = flatten_config([ROOT / "bundles/isic_apla/configs/train.json"], ROOT)
    assert not [s for s in _strings(flat) if s.startswith("%")]
    shared = json.loads((ROOT / "bundles/common/sa_train.json").read_text())
    assert flat["train"] == shared["train"] and flat["validate"] == shared["validate"]
    base = json.loads((ROOT / "bundles/common/base.json").read_text())
    assert flat["imports"] == base["imports"] and flat["backbone"] == base["backbone"]
    # parsed from a folder with no bundles/ at all
    (tmp_path / "train.json").write_text(json.dumps({**flat, **TINY, "random_init_warning": False}))
    with working_directory(tmp_path):
        parser = ConfigParser()
        parser.read_config(str(tmp_path / "train.json"))
        assert type(parser.get_parsed_content("network_def")).__name__ == "ViTUperNet"


def test_flatten_config_later_files_win_and_self_inclusion_fails(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"x": 1, "y": 2}))
    (tmp_path / "b.json").write_text(json.dumps({"y": 3, "z": "%a.json::x"}))
    assert flatten_config([tmp_path / "a.json", tmp_path / "b.json"], tmp_path) == {"x": 1, "y": 3, "z": 1}
    (tmp_path / "loop.json").write_text(json.dumps({"a": {"b": "%loop.json::a"}}))
    with pytest.raises(ValueError, match="nested deeper"):
        flatten_config([tmp_path / "loop.json"], tmp_path)


@pytest.mark.parametrize(
    "name, task, first_classes",
    [("isic_apla", "segmentation", ["background", "lesion"]),
     ("isic_cls_apla", "classification", ["MEL", "NV"]),
     ("cxr14_lora", "multilabel", ["Atelectasis", "Cardiomegaly"])],
)
def test_prepare_served_bundle_writes_standalone_configs(tmp_path, name, task, first_classes):
    served = prepare_served_bundle(ROOT / "bundles" / name, tmp_path / "ws", tmp_path,
                                   overrides={"img_size": 56})
    assert served.task == task and served.class_names[:2] == first_classes
    assert served.path == (tmp_path / "ws" / name).resolve()
    for config_name in ("train.json", "inference.json", "metadata.json", "multi_gpu_train.json"):
        assert (served.path / "configs" / config_name).is_file(), config_name
    train = json.loads((served.path / "configs/train.json").read_text())
    inference = json.loads((served.path / "configs/inference.json").read_text())
    assert train["bundle_root"] == str(served.path) and train["data_dir"] == str(tmp_path.resolve())
    assert train["img_size"] == 56 and inference["img_size"] == 56
    assert {"preprocessing", "postprocessing", "inferer", "network_def"} <= set(inference)
    assert inference["backbone_weights"] is None and train["init_model_file"] is None
    assert not [s for s in _strings(inference) if s.startswith("%")]


def test_prepare_served_bundle_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/train.json does not exist"):
        prepare_served_bundle(tmp_path / "nope", tmp_path / "ws", tmp_path)


def test_models_sync_newest_wins(tmp_path, tiny_bundle_project):
    project, _ = tiny_bundle_project
    source = project / "bundles" / "isic_apla"
    served = prepare_served_bundle(source, tmp_path / "ws", tmp_path)
    copied = served.model_file
    assert copied.read_bytes() == (source / "models/model.pt").read_bytes()
    assert (served.path / "models/model.json").is_file() and (served.path / "models/adapter.pt").is_file()
    # a model trained later in MONAI Label (newer than the bundle's) is kept
    copied.write_bytes(b"trained in MONAI Label")
    os.utime(copied, (time.time() + 60, time.time() + 60))
    prepare_served_bundle(source, tmp_path / "ws", tmp_path)
    assert copied.read_bytes() == b"trained in MONAI Label"
    # a model trained later with monai.bundle run (newer than the workspace's) replaces it
    os.utime(source / "models/model.pt", (time.time() + 120, time.time() + 120))
    prepare_served_bundle(source, tmp_path / "ws", tmp_path)
    assert copied.read_bytes() == (source / "models/model.pt").read_bytes()


def _serve(config_file: Path, image: str, model_file: Path | None) -> torch.Tensor:
    """What MONAI Label's BundleInferTask does with the served inference.json: preprocessing,
    network_def + strict load of models/model.pt, inferer, postprocessing."""
    parser = ConfigParser()
    parser.read_config(str(config_file))
    network = parser.get_parsed_content("network_def")
    if model_file is not None:
        network.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True), strict=True)
    data = parser.get_parsed_content("preprocessing")({"image": image})
    with torch.no_grad():
        pred = parser.get_parsed_content("inferer")(data["image"][None], network.eval())[0]
    return parser.get_parsed_content("postprocessing")({**data, "pred": pred})["pred"]


def test_served_segmentation_equals_the_infer_cli(tmp_path, tiny_bundle_project):
    project, demo = tiny_bundle_project
    served = prepare_served_bundle(project / "bundles/isic_apla", tmp_path / "ws", tmp_path, overrides=TINY)
    image = sorted((demo / "isic2018/ISIC2018_Task1-2_Validation_Input").glob("*.jpg"))[0]
    with working_directory(tmp_path):  # any working directory
        mask = _serve(served.path / "configs/inference.json", str(image), served.model_file)
    width, height = Image.open(image).size
    assert tuple(mask.shape) == (1, height, width)
    assert set(np.unique(mask.numpy()).tolist()) <= {0.0, 1.0}
    out = tmp_path / "cli"
    assert infer(bundle=str(project / "bundles/isic_apla"), input=str(image), output_dir=str(out),
                 overrides=TINY, progress=False, overlay=False) == EXIT_OK
    cli_mask = np.asarray(Image.open(next(out.glob("*.png"))))
    np.testing.assert_array_equal(cli_mask > 0, mask.numpy()[0] > 0)


def test_served_classification_gives_probabilities(tmp_path, tiny_bundle_project):
    project, demo = tiny_bundle_project
    served = prepare_served_bundle(project / "bundles/isic_cls_apla", tmp_path / "ws", tmp_path, overrides=TINY)
    image = sorted((demo / "isic2018/ISIC2018_Task3_Validation_Input").glob("*.jpg"))[0]
    probs = _serve(served.path / "configs/inference.json", str(image), None)  # untrained: any weights do
    assert tuple(probs.shape) == (7,)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)


def test_read_class_label(tmp_path):
    names = ["MEL", "NV", "BCC"]
    (tmp_path / "one.json").write_text('{"label": "NV"}')
    (tmp_path / "many.json").write_text('{"labels": ["MEL", "BCC"]}')
    (tmp_path / "none.json").write_text('{"labels": []}')
    assert read_class_label(tmp_path / "one.json", names, multilabel=False) == 1
    assert read_class_label(tmp_path / "one.json", names, multilabel=True) == [0.0, 1.0, 0.0]
    assert read_class_label(tmp_path / "many.json", names, multilabel=True) == [1.0, 0.0, 1.0]
    assert read_class_label(tmp_path / "none.json", names, multilabel=True) == [0.0, 0.0, 0.0]
    bad = {
        "many.json": "exactly one class",
        "unknown.json": "unknown class",
        "nokey.json": "no 'label'",
        "mask.png": "not a JSON class label",
        "list.json": "expected a JSON object",
        "missing.json": "label file not found",
        "number.json": "must be strings",
    }
    (tmp_path / "unknown.json").write_text('{"label": "XYZ"}')
    (tmp_path / "nokey.json").write_text('{"class": "NV"}')
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "mask.png")
    (tmp_path / "list.json").write_text('["NV"]')
    (tmp_path / "number.json").write_text('{"label": 1}')
    for name, reason in bad.items():
        with pytest.raises(LabelError, match=reason) as err:
            read_class_label(tmp_path / name, names, multilabel=False)
        assert name in str(err.value)


def test_training_items_take_labels_of_their_kind(tmp_path):
    image = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
    mask, class_label, empty = tmp_path / "a_mask.png", tmp_path / "a.json", tmp_path / "empty.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mask)
    class_label.write_text('{"label": "NV"}')
    empty.write_bytes(b"")
    records = [{"image": str(image), "label": str(mask)}, {"image": str(image), "label": str(class_label)},
               {"image": str(image), "label": str(empty)}, {"image": str(tmp_path / "gone.jpg"), "label": str(mask)}]
    items, skipped = training_items(records, "segmentation", ["background", "lesion"])
    assert items == [{"image": str(image), "label": str(mask)}]
    assert len(skipped) == 3 and "not a mask image" in skipped[0] and "empty" in skipped[1]
    items, skipped = training_items(records, "classification", ["MEL", "NV"])
    assert items == [{"image": str(image), "label": 1}]
    assert len(skipped) == 3 and "not a JSON class label" in skipped[0]
