"""Seeded, stratified, nested label fractions and their split JSON."""

from __future__ import annotations

import json
import os
import random
import shutil

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from essa_monai.data import (
    DatasetLayoutError,
    fraction_key,
    isic2018_task3_datalist,
    label_matrix,
    make_demo_data,
    make_fraction_splits,
    read_split,
    stratified_partition,
    write_split_json,
)

# label prevalences of a ChestX-ray14-like problem; the last label is very rare
PREVALENCE = np.array([0.10, 0.03, 0.12, 0.18, 0.05, 0.06, 0.012, 0.05, 0.04, 0.02, 0.02, 0.015, 0.03, 0.004])


def multilabel_items(n: int = 2000, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(PREVALENCE))) < PREVALENCE).astype(float)
    return [
        {"image": f"/data/{k:05d}.png", "label": labels[k].tolist(), "id": f"{k:05d}", "patient_id": f"p{k // 3}"}
        for k in range(n)
    ]


def ids(items: list[dict]) -> list[str]:
    return [i["id"] for i in items]


def positives(items: list[dict]) -> np.ndarray:
    return label_matrix(items).sum(0)


def test_fraction_keys():
    assert [fraction_key(f) for f in (1.0, 0.1, 0.01, 0.025)] == [
        "training", "training_10pct", "training_1pct", "training_2.5pct"]


def test_same_seed_gives_identical_split_regardless_of_input_order():
    items = multilabel_items()
    shuffled = items[:]
    random.Random(5).shuffle(shuffled)
    a = make_fraction_splits(items, seed=3)
    b = make_fraction_splits(shuffled, seed=3)
    for key in ("training", "training_10pct", "training_1pct", "validation"):
        assert ids(a[key]) == ids(b[key])
    c = make_fraction_splits(items, seed=4)
    assert ids(c["training_1pct"]) != ids(a["training_1pct"])


def test_fraction_sizes_are_exact_and_nested():
    split = make_fraction_splits(multilabel_items(), seed=0, val_fraction=0.1)
    assert split["meta"]["counts"] == {"training": 1800, "training_10pct": 180, "training_1pct": 18,
                                       "validation": 200, "test": 0}
    assert set(ids(split["training_1pct"])) <= set(ids(split["training_10pct"])) <= set(ids(split["training"]))


def test_validation_is_disjoint_from_training_and_together_cover_the_input():
    items = multilabel_items()
    split = make_fraction_splits(items, seed=0)
    train, val = set(ids(split["training"])), set(ids(split["validation"]))
    assert not train & val and train | val == set(ids(items))


def test_ten_percent_keeps_every_label_share_closer_than_random_sampling():
    split = make_fraction_splits(multilabel_items(), seed=0)
    pool, sub = split["training"], split["training_10pct"]
    share_pool = positives(pool) / len(pool)
    deviation = np.abs(positives(sub) / len(sub) - share_pool).max()
    assert deviation <= 0.01
    rng = np.random.default_rng(0)
    random_deviations = [
        np.abs(positives([pool[i] for i in rng.choice(len(pool), len(sub), replace=False)]) / len(sub) - share_pool).max()
        for _ in range(50)
    ]
    assert np.median(random_deviations) > 2 * deviation


def test_one_percent_contains_every_label_present_in_the_pool():
    split = make_fraction_splits(multilabel_items(), seed=0)
    assert (positives(split["training"]) > 0).all()
    assert len(split["training_1pct"]) == 18
    assert (positives(split["training_1pct"]) >= 1).all()  # 14 labels fit in 18 examples


def test_single_label_classes_are_stratified_per_class():
    counts = [300, 150, 100, 60, 30, 10, 5]
    items = [{"image": f"/d/{c}_{k}.jpg", "label": c} for c, n in enumerate(counts) for k in range(n)]
    split = make_fraction_splits(items, seed=0, val_fraction=0.0, fractions=(0.1, 0.01))
    tenth = np.bincount([i["label"] for i in split["training_10pct"]], minlength=7)
    assert np.abs(tenth - np.array(counts) / 10).max() <= 1.0
    assert len(split["training_1pct"]) == 7  # round(0.01 * 655) = 7
    assert np.bincount([i["label"] for i in split["training_1pct"]], minlength=7).tolist() == [1] * 7


def test_group_key_never_splits_a_patient():
    split = make_fraction_splits(multilabel_items(), seed=0, group_key="patient_id")
    train = {i["patient_id"] for i in split["training"]}
    val = {i["patient_id"] for i in split["validation"]}
    assert not train & val
    assert abs(len(split["validation"]) - 200) <= 3  # whole groups of 3


def test_given_validation_and_test_must_not_overlap_training():
    items = multilabel_items(100)
    with pytest.raises(DatasetLayoutError, match="in both the training and the test lists") as info:
        make_fraction_splits(items[:80], validation=items[80:90], test=items[75:])
    assert info.value.path in {i["id"] for i in items[75:80]} | {i["image"] for i in items[75:80]}
    split = make_fraction_splits(items[:80], validation=items[80:90], test=items[90:])
    assert len(split["training"]) == 80 and ids(split["validation"]) == ids(items[80:90])
    assert split["meta"]["val_fraction"] is None


def test_labels_without_classes_give_a_plain_seeded_split():
    items = [{"image": f"/d/{k}.jpg", "label": f"/d/{k}_mask.png"} for k in range(50)]
    split = make_fraction_splits(items, seed=0, fractions=(0.1,), val_fraction=0.2)
    assert split["meta"]["counts"]["training_10pct"] == 4 and len(split["validation"]) == 10


def test_fractions_outside_unit_interval_are_rejected():
    with pytest.raises(ValueError, match=r"fractions must be in \(0, 1\]"):
        make_fraction_splits(multilabel_items(20), fractions=(0.0, 0.5))


def test_stratified_partition_respects_capacities_and_cover():
    labels = np.zeros((10, 2), bool)
    labels[0, 1] = True  # one unit with the rare label
    labels[1:6, 0] = True
    assign = stratified_partition(labels, [3, 7], rng=0, cover=(0,))
    assert np.bincount(assign).tolist() == [3, 7]
    assert assign[0] == 0 and labels[assign == 0, 0].any()


def test_split_json_round_trip_with_portable_relative_paths(tmp_path):
    demo = tmp_path / "demo"
    make_demo_data(demo, seed=0, parts=("isic2018",), isic_task1=(1, 1, 1), isic_task3_per_class=(10, 1))
    root = demo / "isic2018"
    train = isic2018_task3_datalist(root, "train")
    split = make_fraction_splits(train, validation=isic2018_task3_datalist(root, "validation"), seed=0)
    path = write_split_json(split, tmp_path / "splits" / "isic_task3_seed0.json", data_root=root)
    text = open(path).read()
    assert str(root) + "/" not in text.replace(f'"data_root": "{root}"', "")  # only relative paths stored
    back = read_split(path, 0.1)
    assert back["training"] == split["training_10pct"] and back["validation"] == split["validation"]
    assert len(back["training"]) == 7 and sorted(i["label"] for i in back["training"]) == list(range(7))
    monai_view = load_decathlon_datalist(path, is_segmentation=False, data_list_key="training_1pct", base_dir=root)
    assert [i["image"] for i in monai_view] == [i["image"] for i in split["training_1pct"]]
    moved = read_split(path, 1.0, data_root="/mnt/other")
    assert moved["training"][0]["image"].startswith("/mnt/other/ISIC2018_Task3_Training_Input/")
    with pytest.raises(DatasetLayoutError, match="no 'training_5pct'"):
        read_split(path, 0.05)


# ---------------------------------------------------------------- the split file: made once, then read as it is


def test_ensure_split_writes_once_and_checks_the_file_on_every_later_use(tmp_path):
    from essa_monai.data import ensure_split

    items = multilabel_items(n=300)
    path = tmp_path / "split.json"
    assert ensure_split(path, items, seed=2, group_key="patient_id", fractions=0.25) == str(path)
    first, mtime = path.read_text(), path.stat().st_mtime_ns
    meta = json.loads(first)["meta"]
    assert meta["fractions"] == [1.0, 0.25, 0.1, 0.01]
    assert meta["source"]["training"]["count"] == 300 and meta["source"]["validation"] is None

    # used again (any fraction it holds, the lists in another order): the file is read, not redrawn
    assert ensure_split(path, items[::-1], seed=2, group_key="patient_id", fractions=0.1) == str(path)
    assert path.stat().st_mtime_ns == mtime
    # drawn again from scratch: the very same split
    path.unlink()
    ensure_split(path, items, seed=2, group_key="patient_id", fractions=0.25)
    assert path.read_text() == first


@pytest.mark.parametrize("change, differs", [
    ({"seed": 3}, "seed"),
    ({"group_key": None}, "group_key"),
    ({"relabel": True}, "source"),
])
def test_a_split_file_made_from_other_images_or_settings_is_refused_by_name(tmp_path, change, differs):
    from essa_monai.data import ensure_split

    items = multilabel_items(n=200)
    path = ensure_split(tmp_path / "split.json", items, seed=2, group_key="patient_id")
    kwargs = {"seed": 2, "group_key": "patient_id", **{k: v for k, v in change.items() if k != "relabel"}}
    if change.get("relabel"):
        items = [{**items[0], "label": [1.0 - v for v in items[0]["label"]]}] + items[1:]  # one label changed
    with pytest.raises(DatasetLayoutError, match=rf"split\.json: was made from other images or settings \(differs in: {differs}\).*--overwrite"):
        ensure_split(path, items, **kwargs)
    assert ensure_split(path, items, overwrite=True, **kwargs) == path  # remade on request


def test_a_fraction_the_file_lacks_is_refused_with_the_command_to_remake_it(tmp_path):
    from essa_monai.data import ensure_split

    path = ensure_split(tmp_path / "split.json", multilabel_items(n=200))
    with pytest.raises(DatasetLayoutError, match=r"holds the fractions \[1\.0, 0\.1, 0\.01\], not \[0\.5\].*--fractions 0.01,0.1,0.5,1"):
        ensure_split(path, multilabel_items(n=200), fractions=[0.5, 0.1])


def test_dataset_split_is_portable_between_data_folders(tmp_path):
    from essa_monai.data import dataset_split

    demo = tmp_path / "a"
    make_demo_data(demo, seed=0, parts=("isic2018",), isic_task1=(1, 1, 1), isic_task3_per_class=(10, 1))
    split_file = tmp_path / "split.json"
    here = dataset_split("isic2018_task3", demo / "isic2018", split_file, 0.1)
    assert len(here["training"]) == 7 and len(here["validation"]) == 7  # 10 % of 70; the official validation list
    stored = json.loads(split_file.read_text())["training_10pct"]
    assert all(not os.path.isabs(i["image"]) for i in stored)  # relative to the data folder
    moved = tmp_path / "b"
    shutil.copytree(demo, moved)
    there = dataset_split("isic2018_task3", moved / "isic2018", split_file, 0.1)
    assert [i["id"] for i in there["training"]] == [i["id"] for i in here["training"]]
    assert all(i["image"].startswith(str(moved)) and os.path.isfile(i["image"]) for i in there["training"])
