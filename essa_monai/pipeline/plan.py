"""One run's settings resolved before any work (:class:`RunPlan`): the dataset's bundle, the data folder,
the PEFT specs, the split file and the top-level overrides each bundle config gets."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from .bundles import parse_config
from .records import normalise, short_hash
from .settings import ESSASettings, run_dir_of
from .specs import DatasetSpec, PeftSpec, check_ssa_method, dataset_spec, resolve_method

__all__ = ["RunPlan", "plan_run", "make_split_file", "split_file_of", "weights_fingerprint"]

#: keys the pipeline sets itself (paths and the stages' wiring): not accepted in ssa_overrides / sa_overrides
RESERVED_SSA = {"output_dir", "export_dir", "ssa_images", "resume_from", "peft", "data_dir", "seed"}
RESERVED_SA = {"output_dir", "model_file", "adapter_file", "resume_from", "peft", "data_dir", "seed", "val_split",
               "train_datalist", "backbone_weights", "evaluate_only", "split_file", "label_fraction"}


def weights_fingerprint(path: str | None) -> dict[str, Any] | None:
    """``{"path", "bytes"}`` of a weights file (``None`` for a random initialisation)."""
    if path is None:
        return None
    p = Path(path).resolve()
    return {"path": str(p), "bytes": p.stat().st_size if p.is_file() else None}


def _check_overrides(overrides: dict[str, Any], reserved: set[str], which: str) -> None:
    clash = sorted(set(overrides) & reserved)
    if clash:
        raise ValueError(f"{which} may not set {clash}: the pipeline sets them (use the run_essa arguments)")


def _resolve_data_dir(spec: DatasetSpec, settings: ESSASettings) -> str:
    """The dataset folder (the bundle's demo default when not given; demo data are written on first use)."""
    from ..bundle_paths import prepare_data_dir

    if settings.data_dir is not None:
        data_dir = str(Path(settings.data_dir).resolve())
    else:
        (data_dir,) = parse_config(spec.train_config, {}, "data_dir")
    return prepare_data_dir(data_dir)


def split_file_of(settings: ESSASettings, output_root: Path, data_dir: str) -> Path:
    """``<output_root>/<dataset>/splits/seed<seed>-<data folder hash>.json``: one split file per dataset, seed
    and data folder, shared by every method and label fraction."""
    return output_root / settings.dataset / "splits" / f"seed{settings.seed}-{short_hash(data_dir)}.json"


@dataclasses.dataclass
class RunPlan:
    """What one run needs, resolved and checked before any work.

    Attributes:
        settings: the run's :class:`ESSASettings`. spec: its dataset's :class:`DatasetSpec`.
        output_root: folder of all runs. run_dir: this run's folder. data_dir: the dataset folder (absolute).
        sa_method, ssa_method: resolved PEFT specs (``ssa_method`` ``None`` without SSA).
        split_file: the dataset's label-fraction split file (see :func:`split_file_of`).
        split_fractions: other label fractions the split file must hold (a grid's), drawn with this one.
        record: the settings as recorded in ``settings.json`` / ``result.json`` (JSON-normalised).
    """

    settings: ESSASettings
    spec: DatasetSpec
    output_root: Path
    run_dir: Path
    data_dir: str
    sa_method: PeftSpec
    ssa_method: PeftSpec | None
    split_file: Path
    split_fractions: tuple[float, ...]
    record: dict[str, Any]

    def backbone_overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.settings.backbone_name is not None:
            out["backbone_name"] = self.settings.backbone_name
        if self.settings.backbone_kwargs is not None:
            out["backbone_kwargs"] = dict(self.settings.backbone_kwargs)
        return out

    def sa_overrides(self, label_fraction: float | None = None) -> dict[str, Any]:
        """Top-level keys of the SA ``train.json`` shared by training, evaluation and the datalist look-ups
        (no paths of the run): data, seed, split file and label fraction (default: the run's), sizes."""
        s = self.settings
        out = {"data_dir": self.data_dir, "seed": s.seed, "split_file": str(self.split_file),
               "label_fraction": float(s.label_fraction if label_fraction is None else label_fraction),
               **self.backbone_overrides()}
        for key in ("img_size", "epochs", "batch_size"):
            if getattr(s, key) is not None:
                out[key] = getattr(s, key)
        return {**out, **s.sa_overrides}

    def ssa_overrides(self) -> dict[str, Any]:
        """Top-level keys of the SSA config from the settings (the SSA stage adds the paths and the images)."""
        s = self.settings
        out: dict[str, Any] = {"knn_monitor": False, **self.backbone_overrides()}
        if s.backbone_weights is not None:
            out["backbone_weights"] = str(Path(s.backbone_weights).resolve())
        for key, target in (("img_size", "global_crops_size"), ("ssa_epochs", "epochs"), ("ssa_batch_size", "batch_size")):
            if getattr(s, key) is not None:
                out[target] = getattr(s, key)
        return {**out, **s.ssa_overrides}


def _settings_record(settings: ESSASettings, data_dir: str) -> dict[str, Any]:
    record = dataclasses.asdict(settings)
    record["sa_method"] = settings.sa_spec_given
    record["data_dir"] = data_dir
    record["backbone_weights"] = weights_fingerprint(settings.backbone_weights)
    return normalise(record)


def plan_run(settings: ESSASettings, output_root: Path, split_fractions: Sequence[float] = ()) -> RunPlan:
    """Resolve and check ``settings`` (``ValueError``/``FileNotFoundError`` naming the problem) before any work."""
    spec = dataset_spec(settings.dataset)
    fraction = float(settings.label_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    sa_method = resolve_method(settings.sa_spec_given)
    ssa_method = resolve_method(settings.ssa_method) if settings.ssa else None
    if ssa_method is not None:
        check_ssa_method(ssa_method)
    _check_overrides(settings.sa_overrides, RESERVED_SA, "sa_overrides")
    _check_overrides(settings.ssa_overrides, RESERVED_SSA, "ssa_overrides")
    data_dir = _resolve_data_dir(spec, settings)
    return RunPlan(
        settings=settings, spec=spec, output_root=output_root, run_dir=run_dir_of(settings, output_root),
        data_dir=data_dir, sa_method=sa_method, ssa_method=ssa_method,
        split_file=split_file_of(settings, output_root, data_dir), split_fractions=tuple(map(float, split_fractions)),
        record=_settings_record(settings, data_dir),
    )


def make_split_file(plan: RunPlan) -> str:
    """Make the dataset's split file once, holding the run's label fraction and ``plan.split_fractions`` (a
    grid passes all of its fractions, so they are drawn together and nested), with the bundle's own split
    settings (``val_fraction``); a later run checks it and reads it as it is."""
    from ..data import dataset_split_file

    (val_fraction,) = parse_config(plan.spec.train_config, plan.sa_overrides(), "val_fraction", default=None)
    return dataset_split_file(plan.spec.split_dataset, plan.data_dir, str(plan.split_file), seed=plan.settings.seed,
                              fractions=[float(plan.settings.label_fraction), *plan.split_fractions],
                              val_fraction=val_fraction)
