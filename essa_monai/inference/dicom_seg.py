"""DICOM Segmentation objects (SEG) for masks predicted on DICOM images, written with highdicom.

A SEG is a new series in the source image's study: it references the source instance and carries its
patient and study modules (as any DICOM derived object must), one binary segment per foreground class.
Needs the ``dicomseg`` extra (``pip install "essa-monai[dicomseg]"``: highdicom, pydicom >= 3).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

__all__ = ["dicom_seg_available", "write_dicom_seg"]

#: Patient and General Study attributes of type 2 (must be present, may be empty). Files without them
#: (research exports, our demo files) get them empty in the SEG rather than a refusal.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "AccessionNumber", "StudyID")


def dicom_seg_available() -> bool:
    """True when highdicom (the ``dicomseg`` extra) can be imported."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def _segment_description(number: int, name: str, model_name: str, version: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if "lesion" in name.lower():
        category, kind = codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion
    else:  # a class name we have no standard code for: a private ("99"-prefixed) coding scheme
        category, kind = codes.SCT.Tissue, hd.sr.CodedConcept(value=name[:16], scheme_designator="99ESSA", meaning=name)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model_name[:64], version=version or "unknown", family=codes.cid7162.ArtificialIntelligence
        ),
    )


def write_dicom_seg(
    path: str | os.PathLike[str],
    source_path: str | os.PathLike[str],
    mask: np.ndarray,
    class_names: Sequence[str],
    model_name: str,
    version: str = "",
) -> None:
    """Write the label map ``mask`` (``(H, W)``, values = class indices, 0 background) predicted on the
    DICOM file ``source_path`` as a binary DICOM SEG to ``path``: segment ``k`` is ``class_names[k]``,
    every foreground class has a segment (empty ones included). Single-frame sources only (multi-frame
    DICOMs are skipped by ``essa-monai infer``).

    Raises:
        ImportError: highdicom is not installed (the ``dicomseg`` extra).
        ValueError: a multi-frame source, or a mask that does not have the source image's size.
    """
    import highdicom as hd
    import pydicom

    source = pydicom.dcmread(os.fspath(source_path))
    for keyword in _TYPE2:
        if keyword not in source:
            setattr(source, keyword, "")
    if int(source.get("NumberOfFrames") or 1) > 1:
        raise ValueError(f"{source_path}: DICOM SEG output supports single-frame sources only")
    mask = np.asarray(mask)
    if mask.shape != (source.Rows, source.Columns):
        raise ValueError(f"{source_path}: mask {mask.shape} does not match the image ({source.Rows}, {source.Columns})")
    labels = mask[None].astype(np.uint8)  # (frames=1, H, W)
    segments = [_segment_description(k, str(class_names[k]), model_name, version) for k in range(1, len(class_names))]
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=9001,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="essa-monai",
        manufacturer_model_name=model_name[:64],
        software_versions=version or "unknown",
        device_serial_number="none",
        series_description=f"{model_name} segmentation"[:64],
        omit_empty_frames=False,
    )
    seg.save_as(os.fspath(path))
