"""``infer``: the command behind ``essa-monai infer`` and ``scripts/infer.py``."""

from __future__ import annotations

import sys
from typing import Any

from .bundle import UsageError, load_bundle_model
from .inputs import collect_inputs
from .runner import EXIT_USAGE, InferOptions, run_inference

__all__ = ["infer"]


def infer(
    bundle: str,
    input: str,
    output_dir: str,
    model_file: str | None = None,
    batch_size: int = 4,
    device: str = "auto",
    tta: bool = False,
    sliding_window: bool = False,
    overlap: float = 0.25,
    overwrite: bool = False,
    include_patient_ids: bool = False,
    overlay: bool = True,
    datalist_key: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
    dicom_seg: bool = False,
    frame: int | None = None,
    slice_axis: str | int = "axial",
    slice_index: int | None = None,
) -> int:
    """Run a bundle's trained model on images; write masks or predictions and a report.

    The model is the bundle's merged one; the input is one image, a folder (recursive), a CSV (image
    column) or a datalist JSON of DICOM, NIfTI, JPEG/PNG images. Writes to output_dir: segmentation masks (<stem>_seg.png,
    0/255 at the input's size, or <stem>_seg.nii.gz with the input's affine for NIfTI inputs) and overlays
    (<stem>_overlay.png); classification <stem>_pred.json (softmax probabilities and the predicted class;
    sigmoid and every class >= 0.5 for multi-label bundles, i.e. trained with a BCE loss); and report.csv /
    report.json (one row per input: status ok/skipped with the reason, time, outputs, model, version,
    adapter hash). Existing outputs are kept unless overwrite. Prints one line per skipped input and the
    summary; returns the exit code: 0 all ok, 3 some inputs skipped (unreadable, see the report), 2 usage
    error (bad bundle, model file, input or option).

    Args:
        bundle: bundle folder, e.g. bundles/isic_apla.
        input: image file, folder, .csv or datalist .json.
        output_dir: folder for the masks, overlays, predictions and report.csv / report.json (created).
        model_file: merged model (default <bundle>/models/model.pt).
        batch_size: images per forward pass.
        device: auto (CUDA if available, else CPU), cpu or cuda.
        tta: average the prediction over the image and its horizontal flip.
        sliding_window: segmentation at the original resolution (windows of img_size) instead of resizing.
        overlap: overlap of the sliding windows, in [0, 1).
        overwrite: write outputs that exist already again (default: keep them and report them skipped).
        include_patient_ids: add DICOM PatientID/PatientName to the report (never to file names).
        overlay: also write <stem>_overlay.png for segmentation.
        datalist_key: list of a datalist JSON (default: test/testing if present, else all lists).
        num_workers: DataLoader worker processes reading the inputs (0 reads in this process).
        progress: show a progress bar.
        overrides: train.json keys to override when building the network, e.g. '{"img_size": 224}'.
        dicom_seg: also write <stem>_seg.dcm, a DICOM Segmentation object in the source's study, for
            DICOM inputs of segmentation bundles (needs the dicomseg extra: highdicom).
        frame: frame of multi-frame DICOMs (single-frame ones ignore it) and volume of 4D NIfTIs.
        slice_axis: slice orientation of 3D NIfTIs: axial, coronal or sagittal (canonical RAS+ axes).
        slice_index: slice of 3D NIfTIs along slice_axis (default: the middle one); NIfTI masks are
            written on that slice of the input's grid.
    """
    try:
        model = load_bundle_model(bundle, model_file=model_file, device=device, overrides=overrides)
        items = collect_inputs(input, datalist_key=datalist_key)
        options = InferOptions(
            output_dir=output_dir, batch_size=int(batch_size), tta=bool(tta), sliding_window=bool(sliding_window),
            overlap=float(overlap), overwrite=bool(overwrite), include_patient_ids=bool(include_patient_ids),
            overlay=bool(overlay), num_workers=int(num_workers), progress=bool(progress), dicom_seg=bool(dicom_seg),
            frame=None if frame is None else int(frame), slice_axis=slice_axis,
            slice_index=None if slice_index is None else int(slice_index),
        )
        result = run_inference(model, items, options)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    for row in result.rows:
        if row["status"] != "ok":
            print(f"skipped {row['input']}: {row['reason']}")
    print(f"{model.name} {model.version} ({model.task}, adapter {model.adapter_hash or '-'}) on {model.device}: "
          f"{result.summary}; report: {result.report['csv']}")
    return result.exit_code
