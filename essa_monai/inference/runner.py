"""Batch inference with a bundle's merged model: load each input (skipping and reporting bad ones),
batch, predict (optionally with flip TTA or sliding windows), write outputs and the run report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..data import ImageLoadError, NormalizeForBackbone, ResizeToPatchMultiple, detect_format, load_image_2d
from .bundle import InferenceModel, UsageError
from .dicom_seg import dicom_seg_available, write_dicom_seg
from .inputs import InputItem
from .report import summary_line, write_report
from .writers import write_json, write_mask_nifti, write_mask_png, write_overlay_png

__all__ = ["InferOptions", "InferResult", "run_inference", "EXIT_OK", "EXIT_USAGE", "EXIT_SKIPPED"]


#: exit codes of ``essa-monai infer`` / ``scripts/infer.py``
EXIT_OK, EXIT_USAGE, EXIT_SKIPPED = 0, 2, 3


@dataclass
class InferOptions:
    """Settings of one inference run (see ``essa-monai infer --help``)."""

    output_dir: str
    batch_size: int = 4
    tta: bool = False
    sliding_window: bool = False
    overlap: float = 0.25
    overwrite: bool = False
    include_patient_ids: bool = False
    overlay: bool = True
    num_workers: int = 0
    progress: bool = True
    dicom_seg: bool = False
    frame: int | None = None
    slice_axis: str | int = "axial"
    slice_index: int | None = None

    def load_kwargs(self, path: str, fmt: str) -> dict[str, Any]:
        """Reader options for one input: ``frame`` for multi-frame DICOMs (single-frame ones ignore it)
        and 4D NIfTIs; ``slice_axis``/``slice_index`` for 3D NIfTIs."""
        if fmt == "nifti":
            return {"frame": self.frame, "slice_axis": self.slice_axis, "slice_index": self.slice_index}
        if fmt == "dicom" and self.frame is not None:
            import pydicom

            from ..data.dicom import dicom_num_frames

            if dicom_num_frames(pydicom.dcmread(path, stop_before_pixels=True, force=True)) > 1:
                return {"frame": self.frame}
        return {}


@dataclass
class InferResult:
    rows: list[dict[str, Any]]
    report: dict[str, str]
    exit_code: int

    @property
    def summary(self) -> str:
        return summary_line(self.rows)


def expected_outputs(model: InferenceModel, item: InputItem, fmt: str, options: InferOptions) -> dict[str, Path]:
    """Output files of one input, by kind: ``mask``/``overlay`` (segmentation) or ``prediction``."""
    base = Path(options.output_dir) / item.stem
    if model.task == "segmentation":
        ext = ".nii.gz" if fmt == "nifti" else ".png"
        out = {"mask": base.with_name(base.name + f"_seg{ext}")}
        if options.overlay:
            out["overlay"] = base.with_name(base.name + "_overlay.png")
        if options.dicom_seg and fmt == "dicom":
            out["dicom_seg"] = base.with_name(base.name + "_seg.dcm")
        return out
    return {"prediction": base.with_name(base.name + "_pred.json")}


def _patient_ids(path: str) -> dict[str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return {"patient_id": str(ds.get("PatientID", "")), "patient_name": str(ds.get("PatientName", ""))}


class _Prepared(Dataset):
    """Loads and preprocesses input ``i``; a bad file gives ``{"error": reason}`` instead of raising."""

    def __init__(self, items: list[InputItem], indices: list[int], model: InferenceModel, options: InferOptions,
                 formats: dict[int, str]):
        self.items, self.indices, self.task = items, indices, model.task
        self.options, self.formats = options, formats
        self.sliding = options.sliding_window
        self.resize = ResizeToPatchMultiple(spatial_size=model.img_size)
        self.normalize = NormalizeForBackbone()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = self.indices[k]
        start = time.perf_counter()
        out: dict[str, Any] = {"index": index}
        try:
            path = self.items[index].path
            image = load_image_2d(path, **self.options.load_kwargs(path, self.formats[index]))
            shape = tuple(int(s) for s in image.meta["spatial_shape"])
            x = image.as_tensor() if self.sliding else self.resize(image)
            out.update(image=torch.as_tensor(self.normalize(x)).float(), shape=shape)
            if self.task == "segmentation":
                out["display"] = image.as_tensor().numpy()
        except ImageLoadError as err:
            out["error"] = err.reason
        except Exception as err:  # anything else a reader can throw on a bad file
            out["error"] = f"{type(err).__name__}: {err}"
        out["load_ms"] = 1000 * (time.perf_counter() - start)
        return out


def _probabilities(model: InferenceModel, x: torch.Tensor, options: InferOptions) -> torch.Tensor:
    """Class probabilities ``(B, K)`` or ``(B, K, H, W)``: softmax, or sigmoid for multi-label; with
    ``tta`` the mean over the image and its horizontal flip."""
    activation = torch.sigmoid if model.task == "multilabel" else (lambda t: torch.softmax(t, dim=1))

    def predict(batch: torch.Tensor) -> torch.Tensor:
        if options.sliding_window:
            return sliding_window_inference(
                batch, roi_size=(model.img_size, model.img_size), sw_batch_size=options.batch_size,
                predictor=lambda w: activation(model.network(w)), overlap=options.overlap, mode="gaussian")
        return activation(model.network(batch))

    probs = predict(x)
    if options.tta:
        flipped = predict(x.flip(-1))
        probs = (probs + (flipped.flip(-1) if model.task == "segmentation" else flipped)) / 2
    return probs


def _write_outputs(model: InferenceModel, item: InputItem, fmt: str, sample: dict[str, Any], probs: torch.Tensor,
                   todo: dict[str, Path], row: dict[str, Any], options: InferOptions) -> None:
    if model.task == "segmentation":
        if probs.shape[-2:] != sample["shape"]:
            probs = F.interpolate(probs[None], size=sample["shape"], mode="bilinear", align_corners=False)[0]
        mask = probs.argmax(0).to(torch.uint8).cpu().numpy()
        row["foreground_fraction"] = float((mask > 0).mean())
        if "mask" in todo:
            if fmt == "nifti":
                write_mask_nifti(todo["mask"], item.path, mask, options.slice_axis, options.slice_index)
            else:
                write_mask_png(todo["mask"], mask)
        if "overlay" in todo:
            write_overlay_png(todo["overlay"], sample["display"], mask)
        if "dicom_seg" in todo:
            atomic_write(todo["dicom_seg"], lambda tmp: write_dicom_seg(tmp, item.path, mask, model.class_names,
                                                                        model.name, model.version))
        return
    p = probs.cpu().double().numpy()
    probabilities = {name: round(float(v), 6) for name, v in zip(model.class_names, p)}
    if model.task == "multilabel":
        predicted: Any = [n for n, v in zip(model.class_names, p) if v >= model.threshold]
    else:
        predicted = model.class_names[int(p.argmax())]
    row.update(predicted=predicted, probabilities=probabilities)
    if "prediction" in todo:
        write_json(todo["prediction"], {
            "input": Path(item.path).name, "task": model.task, "predicted": predicted,
            "probabilities": probabilities, "activation": "sigmoid" if model.task == "multilabel" else "softmax",
            "threshold": model.threshold if model.task == "multilabel" else None,
            "model": model.name, "bundle_version": model.version, "adapter_hash": model.adapter_hash,
        })


def run_inference(model: InferenceModel, items: list[InputItem], options: InferOptions) -> InferResult:
    """Run ``model`` on ``items``, write the outputs and ``report.csv``/``report.json`` to
    ``options.output_dir``. Existing outputs are kept unless ``options.overwrite`` (their input is then
    not run again). Returns the rows and the exit code (:data:`EXIT_SKIPPED` if any input was skipped)."""
    if options.sliding_window and model.task != "segmentation":
        raise UsageError("--sliding_window is for segmentation bundles only")
    if options.dicom_seg and model.task != "segmentation":
        raise UsageError("--dicom_seg is for segmentation bundles only")
    if options.dicom_seg and not dicom_seg_available():
        raise UsageError("--dicom_seg needs highdicom: pip install \"essa-monai[dicomseg]\"")
    if options.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {options.batch_size}")
    Path(options.output_dir).mkdir(parents=True, exist_ok=True)
    provenance = {"model": model.name, "bundle_version": model.version, "adapter_hash": model.adapter_hash}
    rows: list[dict[str, Any]] = []
    pending: list[int] = []
    outputs: dict[int, dict[str, Path]] = {}
    formats: dict[int, str] = {}
    for i, item in enumerate(items):
        row = {"input": item.path, "output_stem": item.stem, "format": "", "status": "ok", "reason": "",
               "time_ms": 0.0, "outputs": [], **provenance}
        rows.append(row)
        try:
            fmt = formats[i] = detect_format(item.path) if item.path else ""
            if not item.path:
                raise ImageLoadError("", "empty image path in the input list")
        except ImageLoadError as err:
            row.update(status="skipped", reason=err.reason)
            continue
        row["format"] = fmt
        if options.include_patient_ids and fmt == "dicom":
            try:
                row.update(_patient_ids(item.path))
            except Exception:  # unreadable header: reported by the loader below
                pass
        outputs[i] = expected_outputs(model, item, fmt, options)
        row["outputs"] = [str(p) for p in outputs[i].values()]
        existing = [p for p in outputs[i].values() if p.exists()]
        if existing and not options.overwrite and len(existing) == len(outputs[i]):
            row["reason"] = "outputs exist, kept (use --overwrite to rewrite)"
            pred = outputs[i].get("prediction")
            if pred is not None:
                try:
                    saved = json.loads(pred.read_text())
                    row.update(predicted=saved.get("predicted"), probabilities=saved.get("probabilities"))
                except (OSError, ValueError):
                    pass
            continue
        pending.append(i)

    batch_size = 1 if options.sliding_window else options.batch_size  # whole images differ in size
    loader = DataLoader(_Prepared(items, pending, model, options, formats), batch_size=batch_size, shuffle=False,
                        num_workers=options.num_workers, collate_fn=list)
    with tqdm(total=len(pending), desc="infer", unit="img", disable=not options.progress) as bar, torch.inference_mode():
        for batch in loader:
            good = []
            for sample in batch:
                row = rows[sample["index"]]
                row["time_ms"] = sample["load_ms"]
                if "error" in sample:
                    row.update(status="skipped", reason=sample["error"], outputs=[])
                else:
                    good.append(sample)
            if good:
                start = time.perf_counter()
                x = torch.stack([s["image"] for s in good]).to(model.device)
                probs = _probabilities(model, x, options)
                share = 1000 * (time.perf_counter() - start) / len(good)
                for sample, p in zip(good, probs):
                    i = sample["index"]
                    row, item = rows[i], items[i]
                    todo = {k: v for k, v in outputs[i].items() if options.overwrite or not v.exists()}
                    start = time.perf_counter()
                    try:
                        _write_outputs(model, item, formats[i], sample, p, todo, row, options)
                    except Exception as err:  # e.g. a full disk or an unwritable folder: report, go on
                        row.update(status="skipped", reason=f"writing outputs failed: {type(err).__name__}: {err}")
                    row["time_ms"] += share + 1000 * (time.perf_counter() - start)
            bar.update(len(batch))
    for row in rows:
        row["time_ms"] = round(row["time_ms"], 1)
    run = {**provenance, "model_file": model.model_file, "task": model.task, "class_names": model.class_names,
           "device": str(model.device), "options": {k: v for k, v in asdict(options).items() if k != "progress"}}
    report = write_report(options.output_dir, rows, run, include_patient_ids=options.include_patient_ids)
    skipped = any(r["status"] != "ok" for r in rows)
    return InferResult(rows=rows, report=report, exit_code=EXIT_SKIPPED if skipped else EXIT_OK)
