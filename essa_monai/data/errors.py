"""Errors raised by the data layer, and the one helper that applies an ``on_error`` policy.

Every error names the offending file (``path``) and says why (``reason``); ``str(err)`` is
``"<path>: <reason>"``. They subclass :class:`ValueError`, so callers that already catch bad
values keep working.

Functions that walk many files (dataset adapters, :func:`~essa_monai.data.verify_datalist`) take
``on_error="raise"`` (default: stop at the first problem) or ``on_error="skip"`` (drop the item, log a
warning, and append ``(path, reason)`` to the caller's ``skipped`` list), e.g. for batch inference.

Raised inside a MONAI ``Compose`` (e.g. by :class:`~essa_monai.data.LoadImage2Dd`), an error reaches the
caller as the ``__cause__`` of MONAI's ``RuntimeError("applying transform ...")``; the traceback shows both.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

__all__ = [
    "DataError",
    "ImageLoadError",
    "DatasetLayoutError",
    "MaskMismatchError",
    "OnError",
    "handle_error",
]

logger = logging.getLogger(__name__)

#: What to do with a bad item: stop with the error, or skip it and report it.
OnError = Literal["raise", "skip"]


class DataError(ValueError):
    """Base class: a problem with one file, carrying ``path`` and ``reason``."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) when pickled, e.g. from DataLoader workers
        return (type(self), (self.path, self.reason))


class ImageLoadError(DataError):
    """A file could not be turned into an image: missing, empty, corrupt, truncated, not an image,
    an undecodable DICOM transfer syntax, an ambiguous multi-frame file, ..."""


class DatasetLayoutError(DataError):
    """A dataset folder, CSV or datalist is not in the expected layout: a missing file referenced by a
    CSV row, a missing column, an empty folder, overlapping splits, ..."""


class MaskMismatchError(DataError):
    """A mask does not match its image (e.g. different height/width)."""


def handle_error(
    error: DataError, on_error: OnError, skipped: list[tuple[str, str]] | None
) -> None:
    """Apply the ``on_error`` policy to ``error``: raise it, or log it and append ``(path, reason)``
    to ``skipped`` (when a list is given)."""
    if on_error == "raise":
        raise error
    if on_error != "skip":
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    logger.warning("skipping %s", error)
    if skipped is not None:
        skipped.append((error.path, error.reason))
