"""The label-fraction split file of a dataset: made once, then read the same way by every bundle, the
ESSA pipeline and ``essa-monai split``.

:func:`ensure_split` draws the seeded, stratified, nested fractions (:func:`~.fractions.make_fraction_splits`)
the first time and writes them (image/label paths relative to the data folder); later calls check that
the file was made from the same images, labels and settings and return it untouched, so every run of a
comparison trains on the same images. :func:`dataset_split_file` knows each dataset's lists
(:data:`SPLIT_DATASETS`); :func:`dataset_split` is what the bundles call::

    "split": "$essa_monai.data.dataset_split('chestxray14', @data_dir, @split_file, @label_fraction, seed=@seed, val_fraction=@val_fraction)",
    "train_datalist": "$@split['training']"
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import DatasetLayoutError
from .fractions import fraction_key, make_fraction_splits, read_split, write_split_json

__all__ = ["DEFAULT_FRACTIONS", "SPLIT_DATASETS", "ensure_split", "dataset_split_file", "dataset_split"]

#: fractions every split file holds (the papers' 1 %, 10 %, 100 %); others are added when asked for
DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)


def _fingerprint(items: Sequence[dict[str, Any]] | None, label_key: str) -> dict[str, Any] | None:
    """Count and SHA-1 of the sorted (id, label) pairs: the same images and labels wherever the folder is."""
    if items is None:
        return None

    def label(value: Any) -> Any:
        return os.path.basename(value) if isinstance(value, str) else value

    pairs = sorted(json.dumps([str(i.get("id", os.path.basename(str(i.get("image"))))), label(i.get(label_key))])
                   for i in items)
    return {"count": len(pairs), "sha1": hashlib.sha1("\n".join(pairs).encode()).hexdigest()}


def _as_fractions(fractions: float | Sequence[float] | str) -> list[float]:
    if isinstance(fractions, str):
        fractions = [f for f in fractions.split(",") if f.strip()]
    values = [float(f) for f in ([fractions] if isinstance(fractions, (int, float)) else fractions)]
    bad = [f for f in values if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"label fractions must be in (0, 1], got {bad}")
    return sorted(set(values) | set(DEFAULT_FRACTIONS), reverse=True)


def ensure_split(
    split_file: str | os.PathLike[str],
    train: Sequence[dict[str, Any]],
    *,
    validation: Sequence[dict[str, Any]] | None = None,
    test: Sequence[dict[str, Any]] | None = None,
    fractions: float | Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    val_fraction: float = 0.1,
    group_key: str | None = None,
    label_key: str = "label",
    data_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> str:
    """The split file of these lists, made if missing (or ``overwrite``); returns its path.

    Args:
        split_file: the JSON file (see :func:`~.fractions.write_split_json` for its layout).
        train, validation, test, seed, val_fraction, group_key, label_key: as
            :func:`~.fractions.make_fraction_splits` (``validation=None`` carves ``val_fraction`` of ``train``).
        fractions: fractions the file must hold, besides :data:`DEFAULT_FRACTIONS` (all drawn together, nested).
        data_root: folder the image/label paths are stored relative to.
        overwrite: draw and write the file again even if it exists.

    Raises:
        DatasetLayoutError: the file exists but was made from other images, labels or settings, or lacks
            one of ``fractions`` (it says which, and how to remake it).
    """
    path = Path(split_file)
    wanted = _as_fractions(fractions)
    made_from = {
        "seed": int(seed),
        "val_fraction": None if validation is not None else float(val_fraction),
        "group_key": group_key,
        "label_key": label_key,
        "source": {name: _fingerprint(items, label_key) for name, items in
                   (("training", train), ("validation", validation), ("test", test))},
    }
    if path.is_file() and not overwrite:
        content = json.loads(path.read_text(encoding="utf-8"))
        meta = content.get("meta", {})
        differs = [key for key, expected in made_from.items() if meta.get(key) != expected]
        remake = "pass another split_file, or remake it with `essa-monai split ... --overwrite` (runs on the old split then no longer compare)"
        if differs:
            raise DatasetLayoutError(path, f"was made from other images or settings (differs in: {', '.join(differs)}); {remake}")
        missing = [f for f in wanted if fraction_key(f) not in content]
        if missing:
            raise DatasetLayoutError(path, f"holds the fractions {meta.get('fractions')}, not {missing}; {remake} "
                                           f"and --fractions {','.join(f'{f:g}' for f in sorted(set(wanted) | set(meta.get('fractions', []))))}")
        return str(path)
    split = make_fraction_splits(train, fractions=wanted, seed=seed, validation=validation, val_fraction=val_fraction,
                                 test=test, label_key=label_key, group_key=group_key)
    split["meta"].update(made_from)
    return write_split_json(split, path, data_root=data_root)


def _isic2018_task1(data_dir: str) -> dict[str, Any]:
    from .isic2018 import isic2018_task1_datalist

    return {"train": isic2018_task1_datalist(data_dir, "train"), "validation": isic2018_task1_datalist(data_dir, "validation")}


def _isic2018_task3(data_dir: str) -> dict[str, Any]:
    from .isic2018 import isic2018_task3_datalist

    return {"train": isic2018_task3_datalist(data_dir, "train"), "validation": isic2018_task3_datalist(data_dir, "validation")}


def _chestxray14(data_dir: str) -> dict[str, Any]:
    from .chestxray14 import chestxray14_datalist

    return {"train": chestxray14_datalist(data_dir, "train_val"), "test": chestxray14_datalist(data_dir, "test"),
            "group_key": "patient_id", "val_fraction": 0.2}


#: dataset -> its lists and settings: ISIC 2018 keeps its official validation list (the fractions come from
#: the training list); ChestX-ray14 carves 20 % of train_val for validation, whole patients on one side
SPLIT_DATASETS: dict[str, Callable[[str], dict[str, Any]]] = {
    "isic2018_task1": _isic2018_task1,
    "isic2018_task3": _isic2018_task3,
    "chestxray14": _chestxray14,
}


def dataset_split_file(
    dataset: str,
    data_dir: str,
    split_file: str,
    seed: int = 0,
    fractions: float | Sequence[float] = DEFAULT_FRACTIONS,
    val_fraction: float | None = None,
    overwrite: bool = False,
) -> str:
    """Make a dataset's label-fraction split file once; its bundle and the ESSA pipeline read it.

    Returns its path. Run again with the same arguments, it checks the file and leaves it as it is.

    Args:
        dataset: isic2018_task1, isic2018_task3 or chestxray14.
        data_dir: the dataset folder in its official layout.
        split_file: where the split JSON goes, e.g. runs/splits/cxr14_seed0.json.
        seed: seed of the draw; the same seed and data give the same split.
        fractions: label fractions in (0, 1] the file holds, e.g. 0.01,0.1,0.25,1.0 (1 %, 10 % and 100 % always).
        val_fraction: share of the training list carved out for validation where a dataset has no official
            validation list (chestxray14: 0.2 by default); ignored otherwise.
        overwrite: draw and write the file again (runs on the old split then no longer compare).
    """
    if dataset not in SPLIT_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} for a split; choose one of: {', '.join(SPLIT_DATASETS)}")
    data_dir = os.path.abspath(data_dir)
    lists = SPLIT_DATASETS[dataset](data_dir)
    default_val_fraction = lists.pop("val_fraction", 0.1)
    return ensure_split(split_file, lists.pop("train"), fractions=fractions, seed=seed, data_root=data_dir,
                        val_fraction=default_val_fraction if val_fraction is None else float(val_fraction),
                        overwrite=overwrite, **lists)


def dataset_split(
    dataset: str, data_dir: str, split_file: str, label_fraction: float = 1.0, *, seed: int = 0,
    val_fraction: float | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``{"training": <label_fraction's subset>, "validation": [...], "test": [...]}`` read from the split
    file, which is made on first use (:func:`dataset_split_file`); paths joined to ``data_dir``."""
    path = dataset_split_file(dataset, data_dir, split_file, seed=seed, fractions=label_fraction, val_fraction=val_fraction)
    return read_split(path, fraction=label_fraction, data_root=os.path.abspath(data_dir))
