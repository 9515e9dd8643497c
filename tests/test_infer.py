"""Batch inference (essa_monai.inference, ``essa-monai infer``): tiny models trained once per module with
the bundles' train configs, then run on folders of good and bad files of every supported format."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from essa_monai.data.demo import make_demo_data
from essa_monai.inference import EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, infer
from essa_monai.inference.dicom_seg import dicom_seg_available

ROOT = Path(__file__).resolve().parents[1]
TINY = {"backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "img_size": 28}
PATIENT_NAME, PATIENT_ID = "DOE^JANE", "PID99731"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_data(root, parts=("isic2018", "dicom", "nifti"))
    return root


def _train(bundle: str, demo_root: Path, out: Path) -> dict:
    tiny = dict(TINY, decoder_channels=16) if bundle == "isic_apla" else dict(TINY)
    args = {**tiny, "random_init_warning": False, "batch_size": 4, "epochs": 1, "cache_rate": 0.0, "data_dir": str(demo_root / "isic2018"),
            "output_dir": str(out / "run"), "model_file": str(out / "models" / "model.pt"),
            "adapter_file": str(out / "models" / "adapter.pt")}
    cwd = os.getcwd()
    os.chdir(ROOT)  # the configs' % macros name bundles/common/... relative to the repo root
    try:
        workflow = ConfigWorkflow(config_file=f"bundles/{bundle}/configs/train.json", workflow_type=None,
                                  logging_file=False, **args)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    finally:
        os.chdir(cwd)
    return {"bundle": str(ROOT / "bundles" / bundle), "model_file": args["model_file"], "overrides": tiny,
            "progress": False}


@pytest.fixture(scope="module")
def seg_model(demo_root, tmp_path_factory) -> dict:
    return _train("isic_apla", demo_root, tmp_path_factory.mktemp("seg"))


@pytest.fixture(scope="module")
def cls_model(demo_root, tmp_path_factory) -> dict:
    return _train("isic_cls_apla", demo_root, tmp_path_factory.mktemp("cls"))


@pytest.fixture
def mixed_inputs(demo_root, tmp_path) -> dict[str, Path]:
    """A folder (with a sub-folder) of good files of each format and three bad ones."""
    src = tmp_path / "inputs"
    (src / "sub").mkdir(parents=True)
    jpg = sorted((demo_root / "isic2018" / "ISIC2018_Task1-2_Test_Input").glob("*.jpg"))[0]
    good = {"jpeg": src / jpg.name, "png": src / "sub" / "lesion.png", "dicom": src / "chest.dcm",
            "nifti": src / "slice2d.nii.gz"}
    shutil.copy(jpg, good["jpeg"])
    Image.open(jpg).save(good["png"])
    ds = pydicom.dcmread(sorted((demo_root / "dicom").glob("*.dcm"))[0])
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.save_as(good["dicom"])
    shutil.copy(demo_root / "nifti" / "slice2d.nii.gz", good["nifti"])
    bad = {"corrupt_dicom": src / "broken.dcm", "empty": src / "empty.png", "text": src / "notes.png"}
    raw = good["dicom"].read_bytes()
    bad["corrupt_dicom"].write_bytes(raw[:400])  # header cut off: no pixel data
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("this is not an image\n" * 20)
    return {"folder": src, **good, **bad}


def _report(out: Path) -> tuple[list[dict], dict]:
    lines = (out / "report.csv").read_text().splitlines()
    rows = list(csv.DictReader(lines[:-1]))
    return rows, {**json.loads((out / "report.json").read_text()), "summary_row": lines[-1]}


def test_segmentation_folder_writes_masks_for_good_files_and_reports_bad_ones(seg_model, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    code = infer(input=str(mixed_inputs["folder"]), output_dir=str(out), **seg_model)
    assert code == EXIT_SKIPPED == 3
    rows, report = _report(out)
    by_name = {Path(r["input"]).name: r for r in rows}
    assert len(rows) == 7 and report["summary_row"] == "# 4 ok, 3 skipped"
    assert report["summary"] == {"ok": 4, "skipped": 3, "line": "4 ok, 3 skipped"}
    for key in ("jpeg", "png", "dicom", "nifti"):
        row = by_name[mixed_inputs[key].name]
        assert row["status"] == "ok" and row["reason"] == "" and float(row["time_ms"]) > 0
        assert row["model"].startswith("ISIC 2018") and row["bundle_version"] and len(row["adapter_hash"]) == 12
        outputs = [Path(p) for p in row["outputs"].split(";")]
        assert len(outputs) == 2 and all(p.is_file() for p in outputs)
    for key in ("corrupt_dicom", "empty", "text"):
        row = by_name[mixed_inputs[key].name]
        assert row["status"] == "skipped" and len(row["reason"]) > 5 and row["outputs"] == ""
    assert "empty" in by_name["empty.png"]["reason"]
    # masks are 0/255 at the input's own size; the sub-folder is kept
    for key in ("jpeg", "png"):
        stem = mixed_inputs[key].relative_to(mixed_inputs["folder"]).with_suffix("")
        mask = np.array(Image.open(out / f"{stem}_seg.png"))
        assert mask.shape == np.array(Image.open(mixed_inputs[key])).shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        overlay = np.array(Image.open(out / f"{stem}_overlay.png"))
        assert overlay.shape == mask.shape + (3,)
    dicom_mask = np.array(Image.open(out / "chest_seg.png"))
    assert dicom_mask.shape == pydicom.dcmread(mixed_inputs["dicom"]).pixel_array.shape


def test_nifti_mask_keeps_the_input_affine_and_grid(seg_model, demo_root, tmp_path):
    src = tmp_path / "nii"
    src.mkdir()
    reference = nib.load(demo_root / "nifti" / "slice2d.nii.gz")
    shutil.copy(demo_root / "nifti" / "slice2d.nii.gz", src / "slice2d.nii.gz")
    # a 2D slice stored LAS (x flipped), as one slab: the mask must come back in the stored orientation
    las_affine = np.diag([-0.8, 0.8, 2.0, 1.0])
    las = nib.Nifti1Image(np.asarray(reference.dataobj)[::-1, :, None].astype(np.float32), las_affine)
    nib.save(las, src / "las_slab.nii.gz")
    out = tmp_path / "out"
    assert infer(input=str(src), output_dir=str(out), **seg_model) == EXIT_OK
    for name, ref in (("slice2d", reference), ("las_slab", nib.load(src / "las_slab.nii.gz"))):
        mask = nib.load(out / f"{name}_seg.nii.gz")
        np.testing.assert_array_equal(mask.affine, ref.affine)
        assert mask.shape == ref.shape and mask.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    # the LAS copy is the same picture: its mask, flipped back along x, equals the RAS one
    ras_mask = np.asarray(nib.load(out / "slice2d_seg.nii.gz").dataobj)
    las_mask = np.asarray(nib.load(out / "las_slab_seg.nii.gz").dataobj)[:, :, 0]
    np.testing.assert_array_equal(las_mask[::-1], ras_mask)


def test_rerun_keeps_outputs_unless_overwrite(seg_model, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    infer(input=str(mixed_inputs["folder"]), output_dir=str(out), **seg_model)
    outputs = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("report."))
    assert len(outputs) == 8
    for p in outputs:
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    assert infer(input=str(mixed_inputs["folder"]), output_dir=str(out), **seg_model) == EXIT_SKIPPED
    assert all(p.stat().st_mtime_ns == 1_000_000_000 for p in outputs)
    rows, _ = _report(out)
    assert sum("outputs exist" in r["reason"] for r in rows) == 4
    assert infer(input=str(mixed_inputs["folder"]), output_dir=str(out), overwrite=True, **seg_model) == EXIT_SKIPPED
    assert all(p.stat().st_mtime_ns > 1_000_000_000 for p in outputs)
    assert not [p for p in out.rglob("*.tmp*")]  # atomic writes leave no temporary files


def test_classification_writes_probabilities_summing_to_one_and_the_class(cls_model, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    images = [mixed_inputs[k] for k in ("jpeg", "png", "dicom")]
    listing = tmp_path / "list.csv"
    listing.write_text("image\n" + "".join(f"{p}\n" for p in images) + "missing.png\n")
    assert infer(input=str(listing), output_dir=str(out), tta=True, **cls_model) == EXIT_SKIPPED
    rows, report = _report(out)
    assert report["task"] == "classification" and len(report["class_names"]) == 7
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "skipped"]
    for row in rows[:3]:
        probs = json.loads(row["probabilities"])
        assert list(probs) == ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted"] == max(probs, key=probs.get)
        saved = json.loads(Path(row["outputs"]).read_text())
        assert saved["predicted"] == row["predicted"] and saved["activation"] == "softmax"


def test_patient_identifiers_stay_out_of_names_and_reports(cls_model, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    infer(input=str(mixed_inputs["folder"]), output_dir=str(out), **cls_model)
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    text = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    for secret in (PATIENT_ID, "DOE", "JANE", "SYNTHETIC", "DEMO0001"):
        assert not any(secret in n for n in names) and secret not in text
    assert (out / "chest_pred.json").is_file()
    out2 = tmp_path / "with_ids"
    infer(input=str(mixed_inputs["dicom"]), output_dir=str(out2), include_patient_ids=True, **cls_model)
    rows, _ = _report(out2)
    assert rows[0]["patient_id"] == PATIENT_ID and rows[0]["patient_name"] == PATIENT_NAME
    assert not any(PATIENT_ID in p.name for p in out2.rglob("*"))


def test_sliding_window_and_usage_errors(seg_model, mixed_inputs, tmp_path):
    out = tmp_path / "out"
    assert infer(input=str(mixed_inputs["jpeg"]), output_dir=str(out), sliding_window=True, tta=True,
                 **seg_model) == EXIT_OK
    mask = np.array(Image.open(out / f"{mixed_inputs['jpeg'].stem}_seg.png"))
    assert mask.shape == np.array(Image.open(mixed_inputs["jpeg"])).shape[:2]
    bad_model = dict(seg_model, model_file=str(tmp_path / "nope.pt"))
    assert infer(input=str(mixed_inputs["jpeg"]), output_dir=str(out), **bad_model) == EXIT_USAGE == 2
    assert infer(input=str(tmp_path / "missing"), output_dir=str(out), **seg_model) == EXIT_USAGE
    assert infer(input=str(mixed_inputs["jpeg"]), output_dir=str(out), **dict(seg_model, bundle=str(tmp_path))) == 2


def test_cli_exit_code_says_some_skipped(seg_model, mixed_inputs, tmp_path):
    args = [f"--{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in seg_model.items()]
    proc = subprocess.run(
        [sys.executable, "-m", "essa_monai.cli", "infer", f"--input={mixed_inputs['folder']}",
         f"--output_dir={tmp_path / 'out'}", *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "4 ok, 3 skipped" in proc.stdout


PERMUTED = np.array([[0, 0, 2.0, 0], [-1.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("shape, affine, where", [
    ((40, 32), np.diag([1.0, 1.0, 1.0, 1.0]), {}),                     # 2D, RAS
    ((40, 32, 1), np.diag([-0.8, 0.8, 2.0, 1.0]), {}),                 # 2D slab stored LAS
    ((40, 32, 9), PERMUTED, {}),                                       # 3D, axes permuted, middle axial slice
    ((40, 32, 9), PERMUTED, {"slice_axis": "coronal", "slice_index": 5}),
    ((40, 32, 9), np.diag([-0.8, 0.8, 2.0, 1.0]), {"slice_axis": "sagittal", "slice_index": -3}),
])
def test_nifti_mask_round_trips_through_the_reader(shape, affine, where, tmp_path):
    """A mask drawn on the picture the reader shows comes back, read the same way, pixel for pixel."""
    from essa_monai.data import load_image_2d, load_mask_2d
    from essa_monai.inference.writers import write_mask_nifti

    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape).astype(np.float32), affine), path)
    display = load_image_2d(path, **where)[0].numpy()
    mask = np.zeros(display.shape, np.uint8)
    mask[2:9, 3:7] = 1  # asymmetric: catches any flip or transpose
    written = nib.load(write_mask_nifti(tmp_path / "mask.nii.gz", path, mask, **where))
    np.testing.assert_array_equal(written.affine, nib.load(path).affine)  # as stored (float32 sform)
    assert written.shape == shape
    np.testing.assert_array_equal(load_mask_2d(tmp_path / "mask.nii.gz", **where)[0].numpy(), mask)
    assert np.asarray(written.dataobj).sum() == mask.sum()  # one slice only


@pytest.mark.parametrize("bundle, task", [("isic_apla", "segmentation"), ("isic_cls_apla", "classification"),
                                          ("cxr14_lora", "multilabel")])
def test_task_is_read_from_the_bundle(bundle, task):
    from essa_monai.inference import bundle_task

    assert bundle_task(json.loads((ROOT / "bundles" / bundle / "configs" / "train.json").read_text())) == task


def test_dicom_seg_references_the_source_and_holds_the_mask(seg_model, mixed_inputs, tmp_path):
    pytest.importorskip("highdicom")
    src = tmp_path / "dicom_only"
    src.mkdir()
    shutil.copy(mixed_inputs["dicom"], src / "chest.dcm")
    shutil.copy(mixed_inputs["jpeg"], src / "photo.jpg")  # no SEG for non-DICOM inputs
    out = tmp_path / "out"
    assert infer(input=str(src), output_dir=str(out), dicom_seg=True, **seg_model) == EXIT_OK
    assert sorted(p.name for p in out.glob("*.dcm")) == ["chest_seg.dcm"]
    source, seg = pydicom.dcmread(src / "chest.dcm"), pydicom.dcmread(out / "chest_seg.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == source.SOPInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion"]  # metadata.json's channel name
    png = np.array(Image.open(out / "chest_seg.png")) > 0
    np.testing.assert_array_equal(seg.pixel_array.reshape(png.shape).astype(bool), png)
    rows, _ = _report(out)
    assert any(p.endswith("chest_seg.dcm") for r in rows for p in r["outputs"].split(";"))


def test_dicom_seg_is_for_segmentation_bundles(cls_model, mixed_inputs, tmp_path):
    assert infer(input=str(mixed_inputs["dicom"]), output_dir=str(tmp_path / "out"), dicom_seg=True,
                 **cls_model) == EXIT_USAGE


def test_frame_and_slice_options_reach_multi_frame_dicoms_and_nifti_volumes(seg_model, demo_root, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    dicoms = sorted((demo_root / "dicom").glob("*.dcm"))
    shutil.copy(demo_root / "dicom" / "chest_multiframe.dcm", src / "multi.dcm")
    shutil.copy(dicoms[0], src / "single.dcm")  # single-frame: --frame does not apply
    shutil.copy(demo_root / "nifti" / "ct_000.nii.gz", src / "ct.nii.gz")
    out = tmp_path / "out"
    assert infer(input=str(src), output_dir=str(out), frame=1, slice_axis="coronal", slice_index=2,
                 overlay=False, **seg_model) == EXIT_OK
    frames = pydicom.dcmread(src / "multi.dcm").pixel_array
    assert np.array(Image.open(out / "multi_seg.png")).shape == frames.shape[1:]
    ct, mask = nib.load(src / "ct.nii.gz"), nib.load(out / "ct_seg.nii.gz")
    assert mask.shape == ct.shape and np.array_equal(mask.affine, ct.affine)
    # the mask lies on coronal slice 2 of the canonical grid, nowhere else
    canonical = np.asarray(nib.as_closest_canonical(mask).dataobj)
    assert canonical.sum() == canonical[:, 2, :].sum()
    # no DICOM SEG for a multi-frame source: reported with the reason, its PNG mask still written
    out3 = tmp_path / "out3"
    if dicom_seg_available():
        assert infer(input=str(src / "multi.dcm"), output_dir=str(out3), frame=1, dicom_seg=True,
                     **seg_model) == EXIT_SKIPPED
        assert "single-frame sources only" in _report(out3)[0][0]["reason"] and (out3 / "multi_seg.png").is_file()
    # without --frame the multi-frame DICOM is skipped with a reason that says how to pick one
    assert infer(input=str(src / "multi.dcm"), output_dir=str(tmp_path / "out2"), **seg_model) == EXIT_SKIPPED
    rows, _ = _report(tmp_path / "out2")
    assert "pass frame=" in rows[0]["reason"]
