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
    """Run a bundle's trained model on images and write outputs plus report.csv/report.json to
    output_dir. Prints one line per skipped input and the summary; returns the exit code: 0 all ok,
    3 some inputs skipped (see the report), 2 usage error (bad bundle, model file, input or option)."""
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
