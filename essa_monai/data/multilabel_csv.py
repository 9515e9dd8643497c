"""Generic multi-label CSV (CheXpert style): one path column plus label columns chosen by the user.

Label cells hold ``1`` (positive), ``0`` (negative), ``-1`` (uncertain) or nothing (not mentioned).
Uncertain labels follow a policy per column (Irvin et al., CheXpert, 2019): ``"zeros"`` (U-Zeros),
``"ones"`` (U-Ones) or ``"ignore"`` (U-Ignore: value 0 and ``label_mask`` 0 there, so a masked loss can
skip them). Blank cells become ``blank_value`` (default 0, as in CheXpert baselines).
"""

from __future__ import annotations

import os
from typing import Any, Literal, Mapping, Sequence

from .errors import DataError, DatasetLayoutError, OnError, handle_error
from .listing import check_listed_file, read_csv_rows

__all__ = ["UncertainPolicy", "multilabel_csv_datalist"]

UncertainPolicy = Literal["zeros", "ones", "ignore"]
_POLICY_VALUE = {"zeros": 0.0, "ones": 1.0, "ignore": 0.0}


def multilabel_csv_datalist(
    csv_path: str | os.PathLike[str],
    label_columns: Sequence[str],
    *,
    image_column: str = "Path",
    base_dir: str | os.PathLike[str] | None = None,
    uncertain: UncertainPolicy | Mapping[str, UncertainPolicy] = "zeros",
    blank_value: float = 0.0,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Multi-label datalist from a CSV.

    Args:
        csv_path: the CSV (header row required).
        label_columns: label column names, in the order of the output vector.
        image_column: column with the image path (``"Path"`` in CheXpert).
        base_dir: folder relative paths are resolved against (default: the CSV's folder; for CheXpert,
            whose paths start with ``CheXpert-v1.0-small/``, the folder *containing* the dataset).
        uncertain: policy for ``-1``: one for all columns, or ``{column: policy}`` (others ``"zeros"``).
        blank_value: value for empty cells.

    Returns:
        ``[{"image": path, "label": [floats], "id": csv_path_value}, ...]`` in CSV order; with any
        ``"ignore"`` policy each item also has ``"label_mask"`` (1.0 = use, 0.0 = uncertain, ignore).

    Raises:
        DatasetLayoutError: missing CSV/column, a cell not in {1, 0, -1, blank} (names the line and
            column), or a missing image file (names it and the CSV line).
    """
    csv_path = os.fspath(csv_path)
    base_dir = os.path.dirname(os.path.abspath(csv_path)) if base_dir is None else os.path.abspath(base_dir)
    policies = {c: (uncertain if isinstance(uncertain, str) else uncertain.get(c, "zeros")) for c in label_columns}
    bad = {c: p for c, p in policies.items() if p not in _POLICY_VALUE}
    if bad:
        raise ValueError(f"uncertain policy must be one of {list(_POLICY_VALUE)}, got {bad}")
    with_mask = "ignore" in policies.values()
    datalist = []
    for line, row in read_csv_rows(csv_path, (image_column, *label_columns)):
        try:
            label, mask = [], []
            for column in label_columns:
                cell = row[column]
                try:
                    value = float(cell) if cell else None
                except ValueError:
                    value = float("nan")
                if value is not None and value not in (1.0, 0.0, -1.0):
                    raise DatasetLayoutError(
                        csv_path, f"line {line}, column {column!r}: {cell!r} is not 1, 0, -1 or blank"
                    )
                if value == -1.0:
                    label.append(_POLICY_VALUE[policies[column]])
                    mask.append(0.0 if policies[column] == "ignore" else 1.0)
                else:
                    label.append(blank_value if value is None else value)
                    mask.append(1.0)
            path = os.path.join(base_dir, row[image_column])
            check_listed_file(path, f"listed in {csv_path} line {line}")
            item: dict[str, Any] = {"image": path, "label": label, "id": row[image_column]}
            if with_mask:
                item["label_mask"] = mask
            datalist.append(item)
        except DataError as err:
            handle_error(err, on_error, skipped)
    return datalist
