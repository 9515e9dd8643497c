"""File-type detection for 2D loading: by DICOM magic first, then by extension.

A DICOM Part 10 file has a 128-byte preamble followed by the 4 bytes ``b"DICM"``; that wins over
any extension (DICOM files often have none). Otherwise the extension decides.
"""

from __future__ import annotations

import os
from typing import Literal

from .errors import ImageLoadError

__all__ = [
    "PHOTO_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "FileFormat",
    "has_dicom_magic",
    "detect_format",
    "check_file",
    "is_image_path",
]

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
DICOM_EXTENSIONS = (".dcm", ".dicom")
#: every extension :func:`detect_format` knows, used when listing folders.
IMAGE_EXTENSIONS = PHOTO_EXTENSIONS + NIFTI_EXTENSIONS + DICOM_EXTENSIONS

FileFormat = Literal["photo", "dicom", "nifti"]


def check_file(path: str | os.PathLike[str]) -> str:
    """Return ``path`` as ``str`` if it is an existing, non-empty regular file, else raise
    :class:`ImageLoadError` saying which of these it is not."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ImageLoadError(path, "file not found")
    if not os.path.isfile(path):
        raise ImageLoadError(path, "not a regular file (is it a directory?)")
    if os.path.getsize(path) == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    return path


def has_dicom_magic(path: str | os.PathLike[str]) -> bool:
    """True if bytes 128-131 of the file are ``b"DICM"`` (DICOM Part 10 header)."""
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def _extension(path: str) -> str:
    lower = path.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else os.path.splitext(lower)[1]


def is_image_path(path: str | os.PathLike[str], extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    """True if ``path`` ends with one of ``extensions`` (case-insensitive; ``.nii.gz`` handled)."""
    return _extension(os.fspath(path)) in extensions


def detect_format(path: str | os.PathLike[str]) -> FileFormat:
    """Which reader handles ``path``: ``"dicom"`` (magic ``DICM`` at byte 128, or a ``.dcm``/``.dicom``
    extension), ``"nifti"`` (``.nii``/``.nii.gz``) or ``"photo"`` (JPEG, PNG, BMP, TIFF, WebP).

    Raises:
        ImageLoadError: missing or empty file, or an unknown extension without DICOM magic.
    """
    path = check_file(path)
    if has_dicom_magic(path):
        return "dicom"
    ext = _extension(path)
    if ext in DICOM_EXTENSIONS:
        return "dicom"
    if ext in NIFTI_EXTENSIONS:
        return "nifti"
    if ext in PHOTO_EXTENSIONS:
        return "photo"
    raise ImageLoadError(
        path,
        f"unsupported file type: extension {ext or '(none)'!r} is not one of {IMAGE_EXTENSIONS} "
        "and there is no DICOM magic 'DICM' at byte 128",
    )
