"""Shared helpers for dataset adapters: checking listed files and reading CSV tables."""

from __future__ import annotations

import csv
import os
from typing import Sequence

from .errors import DatasetLayoutError, ImageLoadError
from .formats import check_file

__all__ = ["check_listed_file", "read_csv_rows", "require_dir"]


def check_listed_file(path: str | os.PathLike[str], context: str) -> str:
    """Return ``path`` if it is an existing non-empty file; else raise :class:`DatasetLayoutError`
    naming the file, the reason and the ``context`` (e.g. ``"listed in labels.csv line 12"``)."""
    try:
        return check_file(path)
    except ImageLoadError as err:
        raise DatasetLayoutError(err.path, f"{err.reason} ({context})") from None


def require_dir(path: str | os.PathLike[str], what: str) -> str:
    """Return ``path`` as an absolute path if it is a directory; else raise
    :class:`DatasetLayoutError` saying ``what`` was expected there."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise DatasetLayoutError(path, f"folder not found; expected {what}")
    return path


def read_csv_rows(path: str | os.PathLike[str], required_columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV with a header row into ``[(line_number, row_dict), ...]`` (data starts at line 2).

    Raises:
        DatasetLayoutError: file missing, a required column missing (lists the columns found), or no
            data rows.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetLayoutError(path, "CSV file not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required_columns if c not in columns]
        if missing:
            raise DatasetLayoutError(path, f"missing column(s) {missing}; columns found: {columns}")
        rows = [
            (line, {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str) or v is None})
            for line, row in enumerate(reader, start=2)
        ]
    if not rows:
        raise DatasetLayoutError(path, "CSV has a header but no data rows")
    return rows
