"""Dataset adapters on synthetic data written in the real public layouts."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from essa_monai.data import (
    CHESTXRAY14_LABELS,
    ISIC2018_TASK3_CLASSES,
    chestxray14_datalist,
    image_folder_datalist,
    isic2018_task1_datalist,
    isic2018_task3_datalist,
    load_datalist_json,
    make_demo_data,
    multilabel_csv_datalist,
    parse_finding_labels,
    unlabeled_datalist,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, seed=0)
    return out


# ---------------------------------------------------------------- ISIC 2018


@pytest.mark.parametrize("split, count", [("train", 20), ("validation", 5), ("test", 5)])
def test_isic_task1_pairs_every_image_with_its_mask(demo, split, count):
    items = isic2018_task1_datalist(demo / "isic2018", split)
    assert len(items) == count
    assert [i["id"] for i in items] == sorted(i["id"] for i in items)
    for item in items:
        assert os.path.basename(item["image"]) == f"{item['id']}.jpg"
        assert os.path.basename(item["label"]) == f"{item['id']}_segmentation.png"
        assert os.path.isfile(item["label"])


def test_isic_task1_without_ground_truth_folder_gives_unlabelled_items(demo, tmp_path):
    root = tmp_path / "isic"
    shutil.copytree(demo / "isic2018" / "ISIC2018_Task1-2_Test_Input", root / "ISIC2018_Task1-2_Test_Input")
    items = isic2018_task1_datalist(root, "test", require_masks=False)
    assert len(items) == 5 and all("label" not in i for i in items)


def test_isic_task3_labels_match_the_one_hot_csv(demo):
    items = isic2018_task3_datalist(demo / "isic2018", "train")
    assert len(items) == 28
    assert np.bincount([i["label"] for i in items], minlength=7).tolist() == [4] * 7
    csv_path = demo / "isic2018/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"
    with open(csv_path) as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    for item in items:
        row = rows[item["id"]]
        assert float(row[ISIC2018_TASK3_CLASSES[item["label"]]]) == 1.0
        assert sum(float(row[c]) for c in ISIC2018_TASK3_CLASSES) == 1.0
    validation = isic2018_task3_datalist(demo / "isic2018", "validation")
    assert sorted(i["label"] for i in validation) == list(range(7))


def test_isic_unknown_split_is_rejected(demo):
    with pytest.raises(ValueError, match="split must be one of"):
        isic2018_task1_datalist(demo / "isic2018", "val")


# ---------------------------------------------------------------- ChestX-ray14


def test_parse_finding_labels_standard_order():
    vector = parse_finding_labels("Effusion|Mass")
    assert len(vector) == 14 and sum(vector) == 2.0
    assert vector[CHESTXRAY14_LABELS.index("Effusion")] == 1.0 and vector[4] == 1.0
    assert parse_finding_labels("No Finding") == [0.0] * 14
    assert CHESTXRAY14_LABELS[-2:] == ("Pleural_Thickening", "Hernia")


def test_chestxray14_official_lists_are_patient_disjoint_and_labels_match_csv(demo):
    root = demo / "chestxray14"
    train_val = chestxray14_datalist(root, "train_val")
    test = chestxray14_datalist(root, "test")
    assert (len(train_val), len(test)) == (18, 6)
    assert not {i["patient_id"] for i in train_val} & {i["patient_id"] for i in test}
    with open(root / "Data_Entry_2017.csv") as f:
        findings = {r["Image Index"]: r["Finding Labels"] for r in csv.DictReader(f)}
    for item in train_val + test:
        assert len(item["label"]) == 14
        names = {CHESTXRAY14_LABELS[k] for k, v in enumerate(item["label"]) if v == 1.0}
        assert names == (set() if findings[item["id"]] == "No Finding" else set(findings[item["id"]].split("|")))
        assert os.path.isfile(item["image"]) and "images_001" in item["image"]
    assert sum(1 for i in train_val if sum(i["label"]) == 0) >= 1  # "No Finding" rows are all zeros


def test_chestxray14_flat_images_folder_is_accepted(demo, tmp_path):
    root = tmp_path / "cxr"
    shutil.copytree(demo / "chestxray14", root)
    shutil.move(root / "images_001" / "images", root / "images")
    os.rmdir(root / "images_001")
    items = chestxray14_datalist(root, "all")
    assert len(items) == 24 and all(os.path.dirname(i["image"]) == str(root / "images") for i in items)


# ---------------------------------------------------------------- generic multi-label CSV


@pytest.fixture
def chexpert_like(tmp_path):
    for name in ("p1.jpg", "p2.jpg"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    (tmp_path / "train.csv").write_text(
        "Path,Sex,Atelectasis,Edema,Effusion\n"
        "p1.jpg,F,1.0,-1.0,\n"
        "p2.jpg,M,-1.0,0.0,1.0\n"
    )
    return tmp_path / "train.csv"


@pytest.mark.parametrize(
    "policy, labels, masks",
    [
        ("zeros", [[1, 0, 0], [0, 0, 1]], None),
        ("ones", [[1, 1, 0], [1, 0, 1]], None),
        ("ignore", [[1, 0, 0], [0, 0, 1]], [[1, 0, 1], [0, 1, 1]]),
    ],
)
def test_multilabel_csv_uncertain_policies(chexpert_like, policy, labels, masks):
    items = multilabel_csv_datalist(chexpert_like, ["Atelectasis", "Edema", "Effusion"], uncertain=policy)
    assert [i["label"] for i in items] == labels
    assert [i.get("label_mask") for i in items] == (masks or [None, None])
    assert items[0]["image"] == str(chexpert_like.parent / "p1.jpg")


def test_multilabel_csv_per_column_policy_u_ones_for_edema_only(chexpert_like):
    items = multilabel_csv_datalist(chexpert_like, ["Atelectasis", "Edema"], uncertain={"Edema": "ones"})
    assert [i["label"] for i in items] == [[1.0, 1.0], [0.0, 0.0]]


# ---------------------------------------------------------------- generic datalists


def test_datalist_json_segmentation_paths_resolved_against_json_folder(demo):
    items = load_datalist_json(demo / "nifti" / "datalist.json")
    assert [os.path.basename(i["image"]) for i in items] == ["ct_000.nii.gz", "ct_001.nii.gz"]
    assert all(os.path.isabs(i["label"]) and os.path.isfile(i["label"]) for i in items)


def test_datalist_json_classification_labels_are_kept(demo):
    items = load_datalist_json(demo / "dicom" / "datalist.json")
    assert len(items) == 4
    assert items[0]["label"] == [1.0 if n in ("Effusion", "Mass") else 0.0 for n in CHESTXRAY14_LABELS]
    assert os.path.isabs(items[0]["image"])


def test_datalist_json_with_base_dir_and_test_list_of_paths(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(data / "a.png")
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "a.png", "label": 3}], "test": ["a.png"]}))
    train = load_datalist_json(tmp_path / "list.json", base_dir=data)
    test = load_datalist_json(tmp_path / "list.json", "test", base_dir=data)
    assert train == [{"image": str(data / "a.png"), "label": 3}]
    assert test == [{"image": str(data / "a.png")}]


def test_image_folder_classes_are_sorted_subfolders(tmp_path):
    for cls, n in (("nevus", 3), ("melanoma", 2)):
        (tmp_path / cls / "nested").mkdir(parents=True)
        for k in range(n):
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / cls / "nested" / f"{k}.png")
    (tmp_path / "nevus" / "notes.txt").write_text("not an image")
    items, classes = image_folder_datalist(tmp_path)
    assert classes == ["melanoma", "nevus"]
    assert [i["label"] for i in items] == [0, 0, 1, 1, 1]
    assert items[0]["id"] == os.path.join("melanoma", "nested", "0.png")


def test_unlabeled_list_from_folder_recursive_and_flat(demo):
    items = unlabeled_datalist(demo / "isic2018")
    # 30 task 1 images + 30 masks + 35 task 3 images; LICENSE.txt and CSVs are not images
    assert len(items) == 95 and all(set(i) == {"image"} for i in items)
    flat = unlabeled_datalist(demo / "isic2018" / "ISIC2018_Task1-2_Training_Input", recursive=False)
    assert len(flat) == 20


def test_unlabeled_list_from_datalist_drops_labels_and_finds_extensionless_dicom(demo, tmp_path):
    items = unlabeled_datalist(demo / "nifti" / "datalist.json")
    assert [os.path.basename(i["image"]) for i in items] == ["ct_000.nii.gz", "ct_001.nii.gz"]
    assert all(set(i) == {"image"} for i in items)
    shutil.copy(demo / "dicom" / "chest_mono1_12bit.dcm", tmp_path / "IM0001")
    assert unlabeled_datalist(tmp_path) == [{"image": str(tmp_path / "IM0001")}]
    assert len(unlabeled_datalist([demo / "dicom" / "chest_mono2_12bit.dcm"])) == 1
