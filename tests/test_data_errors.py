"""Bad input: every error names the file and the reason; ``on_error="skip"`` reports instead."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from essa_monai.data import (
    DataError,
    DatasetLayoutError,
    ImageLoadError,
    MaskMismatchError,
    chestxray14_datalist,
    image_folder_datalist,
    isic2018_task1_datalist,
    isic2018_task3_datalist,
    load_datalist_json,
    load_image_2d,
    load_mask_2d,
    make_backbone_transforms,
    make_demo_data,
    multilabel_csv_datalist,
    unlabeled_datalist,
    verify_datalist,
)


@pytest.fixture
def demo(tmp_path):
    out = tmp_path / "demo"
    make_demo_data(out, seed=0, parts=("isic2018", "chestxray14"), isic_task1=(3, 1, 1),
                   isic_task3_per_class=(1, 1), chest_patients=4)
    return out


@pytest.fixture
def good_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "good.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def load_error(path, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image_2d(path, **kwargs)
    assert info.value.path == str(path) and str(info.value).startswith(f"{path}: ")
    return info.value


# ---------------------------------------------------------------- single files


def test_missing_file(tmp_path):
    assert load_error(tmp_path / "nope.png").reason == "file not found"


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert load_error(tmp_path / "empty.png").reason == "empty file (0 bytes)"


def test_non_image_file_with_image_extension(tmp_path):
    (tmp_path / "scan.jpg").write_text("this is a text file, not a JPEG\n" * 10)
    assert "not a recognised image file" in load_error(tmp_path / "scan.jpg").reason


def test_unsupported_extension(tmp_path):
    (tmp_path / "notes.txt").write_text("hello" * 50)
    reason = load_error(tmp_path / "notes.txt").reason
    assert "unsupported file type" in reason and "'.txt'" in reason and "DICM" in reason


def test_truncated_jpeg(tmp_path, good_jpeg):
    data = good_jpeg.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated image" in load_error(tmp_path / "cut.jpg").reason


def test_corrupt_png_pixel_data(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff" * 64  # smash the middle of the compressed IDAT stream
    (tmp_path / "bad.png").write_bytes(bytes(data))
    assert "corrupt or truncated image" in load_error(tmp_path / "bad.png").reason


def test_corrupt_png_header(tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[16:20] = b"\xff" * 4  # width field of IHDR: its CRC no longer matches
    (tmp_path / "bad.png").write_bytes(bytes(data))
    assert "header is corrupt" in load_error(tmp_path / "bad.png").reason


def test_truncated_dicom_pixel_data():
    error = load_error(get_testdata_file("MR_truncated.dcm"))
    assert "truncated" in error.reason and "Explicit VR Little Endian" in error.reason


def test_text_file_named_dcm(tmp_path):
    (tmp_path / "fake.dcm").write_text("PATIENT NAME: nobody\n" * 20)
    error = load_error(tmp_path / "fake.dcm")
    assert "no image pixel data" in error.reason and "lacks the 'DICM' header" in error.reason


def test_truncated_nifti(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), tmp_path / "vol.nii")
    data = gzip.compress((tmp_path / "vol.nii").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    assert "NIfTI" in load_error(tmp_path / "cut.nii.gz").reason


def test_dicom_mask_is_rejected_clearly():
    with pytest.raises(ImageLoadError, match="DICOM masks"):
        load_mask_2d(get_testdata_file("CT_small.dcm"))


def test_colour_mask_is_rejected(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "red_mask.png")
    with pytest.raises(ImageLoadError, match="colour mask") as info:
        load_mask_2d(tmp_path / "red_mask.png")
    assert info.value.path.endswith("red_mask.png")


def test_errors_are_value_errors_that_survive_pickling(tmp_path):
    error = ImageLoadError(tmp_path / "x.png", "empty file (0 bytes)")
    assert isinstance(error, ValueError) and isinstance(error, DataError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


# ---------------------------------------------------------------- image / mask pairs


def test_mask_of_different_size_raises_naming_both_files(demo):
    item = isic2018_task1_datalist(demo / "isic2018", "train")[0]
    Image.open(item["label"]).resize((50, 40)).save(item["label"])
    with pytest.raises(RuntimeError) as wrapped:  # MONAI's Compose wraps errors, keeping ours as the cause
        make_backbone_transforms("image", "label")(item)
    error = wrapped.value.__cause__
    assert isinstance(error, MaskMismatchError)
    message = str(error)
    assert error.path == item["label"]
    assert "(40, 50)" in message and os.path.basename(item["image"]) in message
    with pytest.raises(MaskMismatchError, match="differs from image size"):
        isic2018_task1_datalist(demo / "isic2018", "train", check_sizes=True)


def test_missing_mask_raises_or_is_skipped(demo):
    root = demo / "isic2018"
    victim = root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png"
    os.remove(victim)
    with pytest.raises(DatasetLayoutError) as info:
        isic2018_task1_datalist(root, "train")
    assert info.value.path == str(victim) and "file not found" in info.value.reason
    assert "ISIC_0000001.jpg" in info.value.reason
    skipped: list = []
    items = isic2018_task1_datalist(root, "train", on_error="skip", skipped=skipped)
    assert [i["id"] for i in items] == ["ISIC_0000000", "ISIC_0000002"]
    assert skipped == [(str(victim), info.value.reason)]


# ---------------------------------------------------------------- CSV rows and folders


def test_csv_row_whose_image_is_missing_names_file_csv_and_line(demo):
    root = demo / "isic2018"
    items = isic2018_task3_datalist(root, "train")
    os.remove(items[2]["image"])
    with pytest.raises(DatasetLayoutError) as info:
        isic2018_task3_datalist(root, "train")
    assert info.value.path == items[2]["image"]
    assert "file not found" in info.value.reason
    assert "ISIC2018_Task3_Training_GroundTruth.csv line 4" in info.value.reason
    skipped: list = []
    assert len(isic2018_task3_datalist(root, "train", on_error="skip", skipped=skipped)) == 6
    assert [p for p, _ in skipped] == [items[2]["image"]]


def test_csv_row_that_is_not_one_hot(demo):
    csv_path = demo / "isic2018/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"
    lines = csv_path.read_text().splitlines()
    first = lines[1].split(",")
    lines[1] = ",".join(first[:1] + ["1.0"] * 7)
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetLayoutError, match=rf"line 2 \({first[0]}\): labels .* are not one-hot") as info:
        isic2018_task3_datalist(demo / "isic2018", "train")
    assert info.value.path == str(csv_path)


def test_csv_missing_column_lists_columns_found(tmp_path):
    (tmp_path / "t.csv").write_text("Path,Edema\na.png,1\n")
    with pytest.raises(DatasetLayoutError, match=r"missing column\(s\) \['Effusion'\]; columns found: \['Path', 'Edema'\]"):
        multilabel_csv_datalist(tmp_path / "t.csv", ["Edema", "Effusion"])


def test_multilabel_csv_invalid_value_names_line_and_column(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "t.csv").write_text("Path,Edema\na.png,1\na.png,maybe\n")
    with pytest.raises(DatasetLayoutError, match=r"line 3, column 'Edema': 'maybe' is not 1, 0, -1 or blank"):
        multilabel_csv_datalist(tmp_path / "t.csv", ["Edema"])


def test_chestxray14_missing_image_and_unknown_finding(demo):
    root = demo / "chestxray14"
    items = chestxray14_datalist(root, "all")
    os.remove(items[0]["image"])
    with pytest.raises(DatasetLayoutError) as info:
        chestxray14_datalist(root, "all")
    assert os.path.basename(info.value.path) == os.path.basename(items[0]["image"]) == "00000001_000.png"
    assert "file not found" in info.value.reason and "Data_Entry_2017.csv line 2" in info.value.reason
    assert "searched images/ and images_*/images/" in info.value.reason
    csv_path = root / "Data_Entry_2017.csv"
    csv_path.write_text(csv_path.read_text().replace("No Finding", "Nothing", 1))
    with pytest.raises(DatasetLayoutError, match=r"line 2 \(00000001_000.png\): unknown finding\(s\) \['Nothing'\]"):
        chestxray14_datalist(root, "all")


def test_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no image files found") as info:
        unlabeled_datalist(tmp_path / "empty")
    assert info.value.path == str(tmp_path / "empty")
    (tmp_path / "classes" / "benign").mkdir(parents=True)
    (tmp_path / "classes" / "malignant").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "classes" / "benign" / "a.png")
    with pytest.raises(DatasetLayoutError, match="class folder contains no image files") as info:
        image_folder_datalist(tmp_path / "classes")
    assert info.value.path == str(tmp_path / "classes" / "malignant")
    (tmp_path / "isic" / "ISIC2018_Task1-2_Training_Input").mkdir(parents=True)
    (tmp_path / "isic" / "ISIC2018_Task1_Training_GroundTruth").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"no ISIC_\*\.jpg images"):
        isic2018_task1_datalist(tmp_path / "isic")
    with pytest.raises(DatasetLayoutError, match="folder not found; expected the ISIC 2018 task 1 images"):
        isic2018_task1_datalist(tmp_path / "isic", "validation")


def test_datalist_json_missing_list_and_missing_file(tmp_path):
    (tmp_path / "d.json").write_text('{"training": [{"image": "gone.png", "label": 1}]}')
    with pytest.raises(DatasetLayoutError, match=r"no list 'validation' in the datalist; keys present: \['training'\]"):
        load_datalist_json(tmp_path / "d.json", "validation")
    with pytest.raises(DatasetLayoutError, match="file not found") as info:
        load_datalist_json(tmp_path / "d.json")
    assert info.value.path == str(tmp_path / "gone.png")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetLayoutError, match="invalid JSON"):
        load_datalist_json(tmp_path / "bad.json")


def test_batch_inference_skips_and_reports_undecodable_files(tmp_path, good_jpeg):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("no image here" * 10)
    shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp_path / "cut.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm")
    items = [{"image": str(tmp_path / n)} for n in ("good.jpg", "empty.png", "text.jpg", "cut.dcm", "ct.dcm")]
    skipped: list = []
    good = verify_datalist(items, decode=True, on_error="skip", skipped=skipped)
    assert [os.path.basename(i["image"]) for i in good] == ["good.jpg", "ct.dcm"]
    assert [os.path.basename(p) for p, _ in skipped] == ["empty.png", "text.jpg", "cut.dcm"]
    assert "empty file" in skipped[0][1] and "not a recognised image" in skipped[1][1] and "truncated" in skipped[2][1]
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        verify_datalist(items[2:3], decode=True)
