"""The synthetic demo data set: layout, content, determinism, and the CLI script."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian

from essa_monai.data import ISIC2018_TASK3_CLASSES, load_image_2d, make_demo_data
from essa_monai.data.demo import DEMO_DICOM_SPECS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digests(root) -> dict[str, str]:
    return {
        os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
        for d, _, files in os.walk(root) for f in files
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, seed=0)
    return out


def test_same_seed_writes_identical_bytes_and_another_seed_differs(demo, tmp_path):
    again = make_demo_data(tmp_path / "again", seed=0, parts=("isic2018", "dicom", "nifti"))
    first, second = digests(demo), digests(again["out_dir"])
    # README + ISIC (60 task 1 files + 3 LICENSE.txt + 35 task 3 images + 2 CSVs) + 6 DICOM dir + 6 NIfTI dir
    assert len(first) == 140 and len(second) == 1 + 100 + 6 + 6
    assert all(first[name] == digest for name, digest in second.items())
    other = digests(make_demo_data(tmp_path / "other", seed=1, parts=("isic2018",))["out_dir"])
    jpgs = [n for n in other if n.endswith(".jpg")]
    assert len(jpgs) == 65 and all(other[n] != first[n] for n in jpgs)


def test_isic_layout_masks_and_task3_csv(demo):
    root = demo / "isic2018"
    assert sorted(os.listdir(root)) == [
        "ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1-2_Validation_Input",
        "ISIC2018_Task1_Test_GroundTruth", "ISIC2018_Task1_Training_GroundTruth",
        "ISIC2018_Task1_Validation_GroundTruth", "ISIC2018_Task3_Training_GroundTruth",
        "ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Validation_GroundTruth", "ISIC2018_Task3_Validation_Input",
    ]
    masks = sorted((root / "ISIC2018_Task1_Training_GroundTruth").iterdir())
    assert len(masks) == 20 and masks[0].name == "ISIC_0000000_segmentation.png"
    for mask_path in masks:
        mask = np.asarray(Image.open(mask_path))
        image = Image.open(root / "ISIC2018_Task1-2_Training_Input" / mask_path.name.replace("_segmentation.png", ".jpg"))
        assert set(np.unique(mask).tolist()) == {0, 255} and mask.shape == (image.height, image.width)
        assert 96 <= image.height <= 128 and 128 <= image.width <= 160 and 0.03 < (mask > 0).mean() < 0.5
    with open(root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", *ISIC2018_TASK3_CLASSES] and rows[0]["image"] == "ISIC_0024306"
    assert [sum(float(r[c]) for r in rows) for c in ISIC2018_TASK3_CLASSES] == [4.0] * 7


def test_chest_dicoms_have_the_promised_tags(demo):
    for stem, photometric, bits, slope, intercept in DEMO_DICOM_SPECS:
        path = demo / "dicom" / f"{stem}.dcm"
        assert open(path, "rb").read(132)[128:] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert (ds.PhotometricInterpretation, ds.BitsStored, ds.BitsAllocated) == (photometric, bits, 16)
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (slope, intercept)
        assert float(ds.WindowWidth) > 0 and ds.pixel_array.shape == (128, 112)
        assert int(ds.pixel_array.max()) <= 2**bits - 1
    assert pydicom.dcmread(demo / "dicom" / "chest_multiframe.dcm").NumberOfFrames == 3


def test_all_four_chest_dicom_encodings_display_the_same_picture(demo):
    images = [load_image_2d(demo / "dicom" / f"{spec[0]}.dcm")[0].numpy() for spec in DEMO_DICOM_SPECS]
    assert images[0].shape == (128, 112)
    for other in images[1:]:
        assert np.abs(other - images[0]).max() < 2e-3  # 12-bit quantisation
    assert images[0].min() < 0.05 and images[0].max() > 0.9


def test_demo_nifti_volumes_are_las_with_hounsfield_units(demo):
    import nibabel as nib

    ct = nib.load(demo / "nifti" / "ct_000.nii.gz")
    seg = np.asanyarray(nib.load(demo / "nifti" / "seg_000.nii.gz").dataobj)
    assert ct.shape == (48, 40, 24) and nib.aff2axcodes(ct.affine) == ("L", "A", "S")
    hu = np.asanyarray(ct.dataobj)
    assert hu.min() < -950 and 100 < hu[seg == 2].mean() < 140 and set(np.unique(seg).tolist()) == {0, 1, 2}


def test_existing_output_is_not_overwritten_by_accident(demo):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_demo_data(demo, parts=("nifti",))


def test_cli_script_writes_and_reports(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "make_demo_data.py"), "--out_dir", str(tmp_path / "d"),
         "--seed", "2"],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    )
    assert "wrote synthetic demo data" in result.stdout and "(seed=2)" in result.stdout
    assert "isic2018: task1_training=20, task1_validation=5, task1_test=5, task3_training=28" in result.stdout
    assert "chestxray14: images=24, train_val=18, test=6" in result.stdout
    assert len(list((tmp_path / "d" / "isic2018" / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))) == 20
