"""Label fractions for data-efficient learning (1 %, 10 %, 100 % of the labelled training pool).

:func:`make_fraction_splits` draws, from a training datalist, a validation set (unless one is given)
and nested training subsets (1 % ⊂ 10 % ⊂ 100 %), all seeded and stratified with iterative
stratification (Sechidis et al., ECML 2011) so multi-label data keeps each label's share, rarest
labels first; every subset gets at least one example of each class when its size allows. With
``group_key`` (e.g. ``"patient_id"``) whole groups move together, so no patient straddles
training and validation. :func:`write_split_json` saves the result as a MONAI datalist JSON
(``"training"``, ``"training_10pct"``, ``"training_1pct"``, ``"validation"``, ``"test"`` + ``"meta"``)
that :func:`read_split` or ``monai.data.load_decathlon_datalist(path, data_list_key="training_1pct")``
read back, so every run of a comparison uses the same images.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write
from .errors import DatasetLayoutError

__all__ = [
    "label_matrix",
    "stratified_partition",
    "fraction_key",
    "make_fraction_splits",
    "write_split_json",
    "read_split",
]

_PATH_KEYS = ("image", "label")


def label_matrix(
    datalist: Sequence[dict[str, Any]], label_key: str = "label", num_classes: int | None = None
) -> np.ndarray:
    """Boolean ``(N, L)`` matrix of positive labels used for stratification.

    A class index (``int``) becomes one-hot over ``num_classes`` (default ``max + 1``); a vector
    (multi-hot / one-hot list) is thresholded at 0.5. Other labels (mask paths, missing) have no class
    information: the matrix then has 0 columns and splits are plain random.
    """
    values = [item.get(label_key) for item in datalist]
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        n = int(max(values)) + 1 if num_classes is None else num_classes
        out = np.zeros((len(values), n), dtype=bool)
        out[np.arange(len(values)), np.asarray(values, dtype=int)] = True
        return out
    if values and all(isinstance(v, (list, tuple, np.ndarray)) for v in values):
        widths = {len(v) for v in values}
        if len(widths) != 1:
            raise ValueError(f"label vectors under {label_key!r} have different lengths {sorted(widths)}")
        return np.asarray(values, dtype=float) > 0.5
    return np.zeros((len(values), 0), dtype=bool)


def stratified_partition(
    labels: np.ndarray,
    capacities: Sequence[int],
    *,
    sizes: np.ndarray | None = None,
    rng: np.random.Generator | int = 0,
    cover: Sequence[int] = (),
) -> np.ndarray:
    """Assign each unit (an example, or a group of examples) to one of ``K`` subsets.

    Iterative stratification: take the label with the fewest unassigned units, give each of its
    units to the subset that most wants that label (desired count = subset share x label total), ties
    to the emptier subset; unlabelled units fill what is left. Subsets never exceed their capacity when
    units have size 1 (so sizes are exact); groups fit as well as their sizes allow.

    Args:
        labels: bool ``(U, L)``, positives per unit.
        capacities: ``K`` target sizes in examples, summing to ``sizes.sum()``.
        sizes: examples per unit, default all 1.
        rng: generator or seed (random order of units and tie-breaks).
        cover: subsets that first get one unit of every label (rarest first) if they have room; listed
            in priority order (a label with a single unit goes to the first).

    Returns:
        int ``(U,)`` subset index per unit.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    labels = np.asarray(labels, dtype=bool)
    n_units, n_labels = labels.shape
    sizes = np.ones(n_units, dtype=int) if sizes is None else np.asarray(sizes, dtype=int)
    capacity = np.asarray(capacities, dtype=float).copy()
    if capacity.sum() != sizes.sum():
        raise ValueError(f"capacities sum to {capacity.sum():g} but there are {sizes.sum()} examples")
    weighted = labels * sizes[:, None]
    desired = capacity[:, None] / max(sizes.sum(), 1) * weighted.sum(0)[None, :]
    covered = np.zeros((len(capacity), n_labels), dtype=bool)
    assign = np.full(n_units, -1)
    order = rng.permutation(n_units)
    tie_break = rng.random(len(capacity))

    def place(unit: int, subset: int) -> None:
        assign[unit] = subset
        capacity[subset] -= sizes[unit]
        desired[subset] -= weighted[unit]
        covered[subset] |= labels[unit]

    unit_counts = labels.sum(0)
    rarest_first = [int(l) for l in np.argsort(unit_counts, kind="stable") if unit_counts[l] > 0]
    for subset in cover:
        for label in rarest_first:
            if covered[subset, label]:
                continue
            candidates = order[(assign[order] < 0) & labels[order, label] & (sizes[order] <= capacity[subset])]
            if candidates.size:
                place(int(candidates[0]), subset)

    while True:
        remaining = labels[assign < 0].sum(0)
        if not remaining.any():
            break
        label = int(np.argmin(np.where(remaining > 0, remaining, np.iinfo(np.int64).max)))
        for unit in order[(assign[order] < 0) & labels[order, label]]:
            fits = capacity >= sizes[unit]
            pool = np.flatnonzero(fits) if fits.any() else np.array([int(np.argmax(capacity))])
            best = np.lexsort((tie_break[pool], capacity[pool], desired[pool, label]))[-1]
            place(int(unit), int(pool[best]))
    for unit in order[assign[order] < 0]:
        place(int(unit), int(np.lexsort((tie_break, capacity))[-1]))
    return assign


def fraction_key(fraction: float) -> str:
    """Datalist key of a fraction: ``1.0 -> "training"``, ``0.1 -> "training_10pct"``,
    ``0.01 -> "training_1pct"``, ``0.025 -> "training_2.5pct"``."""
    return "training" if fraction == 1.0 else f"training_{fraction * 100:g}pct"


def _item_id(item: dict[str, Any]) -> str:
    return str(item.get("id", item.get("image")))


def _sorted_copy(datalist: Sequence[dict[str, Any]] | None, name: str) -> list[dict[str, Any]]:
    items = sorted((copy.deepcopy(dict(i)) for i in datalist or []), key=_item_id)
    duplicates = sorted(i for i, n in Counter(_item_id(i) for i in items).items() if n > 1)
    if duplicates:
        raise DatasetLayoutError(duplicates[0], f"appears more than once in the {name} datalist")
    return items


def _check_disjoint(named: dict[str, list[dict[str, Any]]], group_key: str | None) -> None:
    """No example (by id and by image path) nor group in two of training/validation/test."""
    seen: dict[str, str] = {}
    for name, items in named.items():
        keys = {_item_id(i) for i in items} | {str(i.get("image")) for i in items}
        if group_key:
            keys |= {f"{group_key}={i[group_key]}" for i in items if group_key in i}
        for key in sorted(keys):
            if seen.setdefault(key, name) != name:
                raise DatasetLayoutError(key, f"is in both the {seen[key]} and the {name} lists; they must not overlap")


def _units(items: list[dict[str, Any]], group_key: str | None) -> list[list[int]]:
    """Indices of ``items`` per unit: one per item, or one per group (groups in sorted order)."""
    if group_key is None:
        return [[i] for i in range(len(items))]
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if group_key not in item:
            raise DatasetLayoutError(_item_id(item), f"has no {group_key!r} (group_key) entry")
        groups.setdefault(str(item[group_key]), []).append(i)
    return [groups[g] for g in sorted(groups)]


def _split_units(
    labels: np.ndarray, units: list[list[int]], capacities: list[int], rng: np.random.Generator, cover: Sequence[int]
) -> list[list[int]]:
    """Partition item indices into ``len(capacities)`` lists, unit by unit."""
    unit_labels = np.array([labels[u].any(0) for u in units]).reshape(len(units), labels.shape[1])
    sizes = np.array([len(u) for u in units])
    assign = stratified_partition(unit_labels, capacities, sizes=sizes, rng=rng, cover=cover)
    return [sorted(i for u, a in zip(units, assign) if a == k for i in u) for k in range(len(capacities))]


def make_fraction_splits(
    train: Sequence[dict[str, Any]],
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    validation: Sequence[dict[str, Any]] | None = None,
    val_fraction: float = 0.1,
    test: Sequence[dict[str, Any]] | None = None,
    label_key: str = "label",
    num_classes: int | None = None,
    group_key: str | None = None,
) -> dict[str, Any]:
    """Seeded, stratified, nested label fractions of a training datalist.

    Args:
        train: labelled training datalist (items identified by ``"id"``, else ``"image"``).
        fractions: fractions in ``(0, 1]`` of the training pool; the subsets are nested.
        seed: RNG seed; same inputs + same seed -> same split (input order does not matter).
        validation: official validation datalist; if ``None``, ``val_fraction`` of ``train`` is
            carved out (stratified, by group) before the fractions are drawn (``0`` for none).
        test: test datalist, copied through; must not overlap training or validation.
        label_key, num_classes: see :func:`label_matrix`.
        group_key: item key whose value must not be split across subsets (e.g. ``"patient_id"``).

    Returns:
        ``{"meta": {...}, "training": pool, fraction_key(f): subset, ..., "validation": [...], "test": [...]}``.
        Fraction ``f`` has ``max(1, round(f * len(pool)))`` examples (exact without groups).

    Raises:
        ValueError: a fraction outside ``(0, 1]``.
        DatasetLayoutError: duplicate ids, or an example/group in two of train/validation/test.
    """
    fractions = sorted({float(f) for f in fractions} | {1.0}, reverse=True)
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1], got {fractions}")
    if validation is None and not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    pool = _sorted_copy(train, "training")
    val = _sorted_copy(validation, "validation")
    tst = _sorted_copy(test, "test")
    _check_disjoint({"training": pool, "validation": val, "test": tst}, group_key)

    labels = label_matrix(pool, label_key, num_classes)
    if validation is None and val_fraction > 0:
        n_val = int(round(val_fraction * len(pool)))
        keep, carved = _split_units(labels, _units(pool, group_key), [len(pool) - n_val, n_val], rng, cover=(0, 1))
        pool, val, labels = [pool[i] for i in keep], [pool[i] for i in carved], labels[keep]

    split: dict[str, Any] = {"training": pool}
    current = list(range(len(pool)))  # indices into pool of the previous (larger) fraction
    for fraction in fractions[1:]:
        target = max(1, int(round(fraction * len(pool))))
        if target < len(current):
            sub = [pool[i] for i in current]
            chosen, rest = _split_units(labels[current], _units(sub, group_key), [target, len(current) - target],
                                        rng, cover=(0,))
            current = [current[i] for i in chosen]
        split[fraction_key(fraction)] = [pool[i] for i in current]
    split["validation"], split["test"] = val, tst
    split["meta"] = {
        "seed": seed,
        "fractions": fractions,
        "label_key": label_key,
        "group_key": group_key,
        "val_fraction": None if validation is not None else val_fraction,
        "counts": {k: len(v) for k, v in split.items() if k != "meta"},
        "positives_per_class": {
            k: label_matrix(v, label_key, labels.shape[1] or None).sum(0).tolist() if labels.shape[1] and v else []
            for k, v in split.items() if k != "meta"
        },
    }
    return split


def write_split_json(
    split: dict[str, Any], path: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None
) -> str:
    """Write ``split`` as a datalist JSON; with ``data_root``, ``image``/``label`` paths under it are
    stored relative to it (portable between machines; ``read_split(path, data_root=...)`` re-roots).
    Returns the path written."""
    path = os.fspath(path)
    out = copy.deepcopy(split)
    if data_root is not None:
        root = os.path.abspath(data_root)
        out["meta"]["data_root"] = root
        for key, items in out.items():
            for item in items if key != "meta" else []:
                for k in _PATH_KEYS:
                    value = item.get(k)
                    if isinstance(value, str) and os.path.isabs(value) and value.startswith(root + os.sep):
                        item[k] = os.path.relpath(value, root)
    text = json.dumps(out, indent=1)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_split(
    path: str | os.PathLike[str], fraction: float = 1.0, *, data_root: str | os.PathLike[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Read a split JSON: ``{"training": <fraction's subset>, "validation": [...], "test": [...]}``.

    Relative ``image``/``label`` paths are joined to ``data_root`` (default: the one recorded at write
    time).

    Raises:
        DatasetLayoutError: missing file, or no subset for ``fraction`` (lists those available).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetLayoutError(path, "split JSON not found")
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    key = fraction_key(float(fraction))
    if key not in content:
        raise DatasetLayoutError(path, f"no {key!r} (fraction {fraction}); fractions in file: {content['meta']['fractions']}")
    root = data_root if data_root is not None else content.get("meta", {}).get("data_root")
    out = {}
    for name, source in (("training", key), ("validation", "validation"), ("test", "test")):
        items = copy.deepcopy(content.get(source, []))
        for item in items:
            for k in _PATH_KEYS:
                value = item.get(k)
                if root is not None and isinstance(value, str) and not os.path.isabs(value):
                    item[k] = os.path.join(os.fspath(root), value)
        out[name] = items
    return out
