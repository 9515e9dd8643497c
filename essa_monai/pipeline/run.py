"""One ESSA run: SSA with method M on a dataset's unlabeled training images, SA with method M' from the
SSA-adapted backbone on a label fraction, then evaluation; everything recorded in ``result.json``.

Layout under ``output_root`` (default ``runs/essa``)::

    <dataset>/ssa/<ssa method>-<settings hash>/   SSA, shared by every SA method and label fraction
        images.json        the unlabeled training images SSA saw
        settings.json      what this SSA was run with (the hash names the folder)
        run/               SSA checkpoints (an interrupted SSA resumes from the last epoch) and TensorBoard
        export/            backbone_merged.pth (SA's starting weights), adapter.pt, export.json
        ssa_done.json      written last: time, trainable parameters
    <dataset>/<ssa method>-<sa method>/frac<f>/   one run ("none-<sa method>" without SSA: the baseline)
        settings.json      what this run was run with
        split.json         the label-fraction split (when one is drawn)
        ssa_export ->      link to the SSA export used
        sa/                SA checkpoints, metrics.csv, TensorBoard; sa_done.json written last
        model.pt, model.json, adapter.pt    the SA model (PEFT merged), its PEFT config, adapter-only file
        eval_<split>/      metrics.csv of the evaluation on that split
        result.json        status, metrics, trainable parameters, wall times (written last, or on failure)

Finished work is never redone: a run whose ``result.json`` says ``ok`` for the same settings is returned
as it is; an SSA export or a finished SA stage with the same settings is reused; an interrupted SSA or SA
resumes from its last epoch checkpoint. A run folder written with other settings is moved aside to
``<folder>.prev-<time>`` (nothing is deleted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..atomic import atomic_write
from ..sa.network import unwrap_network
from .bundles import parse_config, run_workflow
from .specs import SSA_CONFIG, DatasetSpec, PeftSpec, check_ssa_method, dataset_spec, method_label, resolve_method

__all__ = ["ESSASettings", "run_essa", "run_combination", "run_dir_of", "read_result", "RESULT_FILE"]

RESULT_FILE = "result.json"
#: keys the pipeline sets itself (paths and the stages' wiring): not accepted in ssa_overrides / sa_overrides
_RESERVED_SSA = {"output_dir", "export_dir", "ssa_images", "resume_from", "peft", "data_dir", "seed"}
_RESERVED_SA = {"output_dir", "model_file", "adapter_file", "resume_from", "peft", "data_dir", "seed", "val_split",
                "train_datalist", "backbone_weights", "evaluate_only"}


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _say(message: str) -> None:
    print(f"[essa] {message}", flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_json(path: Path, content: Any) -> None:
    """Write atomically (a half-written file must never look finished)."""
    text = json.dumps(content, indent=2, default=_json_default, allow_nan=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _normalise(value: Any) -> Any:
    """JSON round trip, so settings compare equal to what was read back from a file."""
    return json.loads(json.dumps(value, default=_json_default, sort_keys=True))


def _short_hash(content: Any, length: int = 8) -> str:
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=_json_default).encode()).hexdigest()[:length]


@dataclasses.dataclass
class ESSASettings:
    """Everything that defines one ESSA run (output paths excluded). ``None`` keeps the bundle's value.

    Attributes:
        dataset: ``isic_seg``, ``isic_cls`` or ``cxr14`` (see :data:`essa_monai.pipeline.DATASETS`).
        ssa_method: PEFT method for SSA: a preset name (``apla``, ``apla_r``, ``lora``, ``bitfit``, ``vpt``,
            ``full``, ``frozen``) or a spec (``{"method": "apla", "r": 64}``).
        sa_method: PEFT method for SA; ``None``: the same as ``ssa_method``.
        label_fraction: fraction in ``(0, 1]`` of the labelled training images SA trains on (seeded,
            stratified, nested 1 % ⊂ 10 % ⊂ 100 %). SSA always sees all unlabeled training images.
        ssa: ``False`` skips SSA: SA starts from ``backbone_weights`` (the baseline).
        data_dir: dataset folder in its official layout; ``None``: the demo data.
        backbone_name: timm DINOv2 name, e.g. ``vit_base_patch14_dinov2``.
        backbone_weights: official DINOv2 (or timm) weights file SSA starts from (SA too when ``ssa=False``);
            ``None``: random initialisation (tests and demos only).
        backbone_kwargs: extra timm arguments (e.g. a tiny ``{"embed_dim": 32, "depth": 2, "num_heads": 2}``).
        img_size: SA input size in pixels (multiple of 14); also SSA's global crop size unless
            ``ssa_overrides`` sets ``global_crops_size``.
        epochs, batch_size: SA epochs and batch size (images).
        ssa_epochs, ssa_batch_size: SSA epochs and batch size (images; each gives 2 global + N local crops).
        ssa_overrides: any other top-level keys of ``bundles/isic_apla/configs/ssa.json`` (e.g. ``lr``,
            ``n_prototypes``, ``local_crops_number``, ``knn_monitor``; the kNN monitor is off by default: it
            needs the ISIC 2018 Task 3 folders).
        sa_overrides: any other top-level keys of the dataset's SA ``train.json`` (e.g. ``lr``, ``head_lr``).
        val_split: split the final evaluation reports (SA always selects its best epoch on ``validation``).
        test: also evaluate on the ``test`` split; the results table then reports test.
        seed: seed of SSA, SA and the label-fraction split.
    """

    dataset: str = "isic_cls"
    ssa_method: PeftSpec | None = "apla"
    sa_method: PeftSpec | None = None
    label_fraction: float = 1.0
    ssa: bool = True
    data_dir: str | None = None
    backbone_name: str | None = None
    backbone_weights: str | None = None
    backbone_kwargs: dict[str, Any] | None = None
    img_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    ssa_epochs: int | None = None
    ssa_batch_size: int | None = None
    ssa_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    sa_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    val_split: str = "validation"
    test: bool = False
    seed: int = 0

    # ---- derived names -------------------------------------------------------------------------------
    @property
    def sa_spec_given(self) -> PeftSpec | None:
        return self.ssa_method if self.sa_method is None else self.sa_method

    @property
    def ssa_label(self) -> str:
        return method_label(self.ssa_method) if self.ssa else "none"

    @property
    def sa_label(self) -> str:
        return method_label(self.sa_spec_given)

    @property
    def row_label(self) -> str:
        """Row name in the results table: ``apla`` (SSA and SA with APLA), ``apla>lora``, ``lora (no SSA)``."""
        if not self.ssa:
            return f"{self.sa_label} (no SSA)"
        return self.sa_label if self.ssa_label == self.sa_label else f"{self.ssa_label}>{self.sa_label}"

    @property
    def fraction_label(self) -> str:
        return f"frac{float(self.label_fraction):g}"

    @property
    def report_split(self) -> str:
        return "test" if self.test else self.val_split


def run_dir_of(settings: ESSASettings, output_root: str | os.PathLike[str]) -> Path:
    """``<output_root>/<dataset>/<ssa label>-<sa label>/frac<f>``."""
    return Path(output_root) / settings.dataset / f"{settings.ssa_label}-{settings.sa_label}" / settings.fraction_label


def read_result(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``result.json`` of a run folder, or ``None``."""
    return _read_json(Path(run_dir) / RESULT_FILE)


# ---- settings -> bundle overrides ------------------------------------------------------------------------

def _check_overrides(overrides: dict[str, Any], reserved: set[str], which: str) -> None:
    clash = sorted(set(overrides) & reserved)
    if clash:
        raise ValueError(f"{which} may not set {clash}: the pipeline sets them (use the run_essa arguments)")


def _backbone_overrides(settings: ESSASettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if settings.backbone_name is not None:
        out["backbone_name"] = settings.backbone_name
    if settings.backbone_kwargs is not None:
        out["backbone_kwargs"] = dict(settings.backbone_kwargs)
    return out


def _weights_fingerprint(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    p = Path(path).resolve()
    return {"path": str(p), "bytes": p.stat().st_size if p.is_file() else None}


def _resolve_data_dir(spec: DatasetSpec, settings: ESSASettings) -> str:
    """The dataset folder (the bundle's demo default when not given; demo data are written on first use)."""
    from ..bundle_paths import prepare_data_dir

    if settings.data_dir is not None:
        data_dir = str(Path(settings.data_dir).resolve())
    else:
        (data_dir,) = parse_config(spec.train_config, {}, "data_dir")
    return prepare_data_dir(data_dir)


def _sa_base_overrides(spec: DatasetSpec, settings: ESSASettings, data_dir: str) -> dict[str, Any]:
    """Top-level SA keys shared by training, evaluation and the datalist look-ups (no paths of the run)."""
    _check_overrides(settings.sa_overrides, _RESERVED_SA, "sa_overrides")
    out = {"data_dir": data_dir, "seed": settings.seed, **_backbone_overrides(settings)}
    if settings.img_size is not None:
        out["img_size"] = settings.img_size
    if settings.epochs is not None:
        out["epochs"] = settings.epochs
    if settings.batch_size is not None:
        out["batch_size"] = settings.batch_size
    out.update(settings.sa_overrides)
    return out


def _fraction_overrides(
    spec: DatasetSpec, settings: ESSASettings, base: dict[str, Any], split_file: Path
) -> dict[str, Any]:
    """Overrides that make SA train on ``label_fraction`` of the labels.

    Datasets with a native fraction key (cxr14) get it, with the split written to ``split_file``. For the
    others a fraction below 1 is drawn here from the bundle's own ``train_datalist`` (the official
    validation list stays the validation set) and ``train_datalist`` is pointed at it.
    """
    fraction = float(settings.label_fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if spec.fraction_key is not None:
        out: dict[str, Any] = {spec.fraction_key: fraction}
        if spec.split_file_key:
            out[spec.split_file_key] = str(split_file)
        return out
    if fraction == 1.0:
        return {}
    from ..data import make_fraction_splits, write_split_json

    train, val = parse_config(spec.train_config, base, "train_datalist", "val_datalist")
    split = make_fraction_splits(train, fractions=(0.01, 0.1, 1.0, fraction), seed=settings.seed, validation=val)
    write_split_json(split, split_file)
    return {"train_datalist": f"$essa_monai.data.read_split({str(split_file)!r}, fraction={fraction!r})['training']"}


# ---- stages ----------------------------------------------------------------------------------------------

def _count(module) -> tuple[int, int]:
    from ..peft import count_parameters

    return count_parameters(module)


def _latest_epoch_checkpoint(folder: Path, prefix: str) -> Path | None:
    """The ``<prefix>epoch=N.pt`` with the largest N in ``folder``."""
    best: tuple[int, Path] | None = None
    for path in folder.glob(f"{prefix}epoch=*.pt"):
        match = re.search(r"epoch=(\d+)\.pt$", path.name)
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), path)
    return best[1] if best else None


def _ssa_images(spec: DatasetSpec, settings: ESSASettings, base: dict[str, Any], folder: Path) -> list[str]:
    """The images of SA's full labelled training pool (fraction 1.0), labels dropped: SSA's data."""
    overrides = dict(base)
    if spec.fraction_key is not None:
        overrides[spec.fraction_key] = 1.0
        if spec.split_file_key:
            overrides[spec.split_file_key] = str(folder / "split.json")
    (train,) = parse_config(spec.train_config, overrides, "train_datalist")
    return sorted(str(item["image"]) for item in train)


def _ssa_stage(
    spec: DatasetSpec, settings: ESSASettings, ssa_spec: PeftSpec, data_dir: str, sa_base: dict[str, Any],
    output_root: Path,
) -> dict[str, Any]:
    """Run SSA (or reuse a finished one with the same settings). Returns its record."""
    _check_overrides(settings.ssa_overrides, _RESERVED_SSA, "ssa_overrides")
    scratch = output_root / settings.dataset / "ssa" / ".images"
    images = _ssa_images(spec, settings, sa_base, scratch)
    overrides: dict[str, Any] = {"knn_monitor": False, **_backbone_overrides(settings)}
    if settings.backbone_weights is not None:
        overrides["backbone_weights"] = str(Path(settings.backbone_weights).resolve())
    if settings.img_size is not None:
        overrides["global_crops_size"] = settings.img_size
    if settings.ssa_epochs is not None:
        overrides["epochs"] = settings.ssa_epochs
    if settings.ssa_batch_size is not None:
        overrides["batch_size"] = settings.ssa_batch_size
    overrides.update(settings.ssa_overrides)
    fingerprint = _normalise({
        "dataset": settings.dataset, "data_dir": data_dir, "peft": resolve_method(ssa_spec), "seed": settings.seed,
        "overrides": overrides, "weights": _weights_fingerprint(settings.backbone_weights),
        "images": {"count": len(images), "sha1": _short_hash(images, 40)},
    })
    folder = output_root / settings.dataset / "ssa" / f"{method_label(ssa_spec)}-{_short_hash(fingerprint)}"
    export_dir, done_file = folder / "export", folder / "ssa_done.json"
    done = _read_json(done_file)
    if done is not None and (export_dir / "backbone_merged.pth").is_file():
        _say(f"SSA {method_label(ssa_spec)} on {settings.dataset}: reusing the finished export {export_dir}")
        return {**done, "cached": True}

    _write_json(folder / "settings.json", fingerprint)
    _write_json(folder / "images.json", {"training": [{"image": p} for p in images]})
    overrides.update({
        "peft": ssa_spec, "seed": settings.seed, "data_dir": data_dir, "ssa_images": str(folder / "images.json"),
        "output_dir": str(folder / "run"), "export_dir": str(export_dir),
    })
    resume = _latest_epoch_checkpoint(folder / "run" / "checkpoints", "checkpoint_")
    if resume is not None:
        overrides["resume_from"] = str(resume)
        _say(f"SSA: resuming the interrupted run from {resume.name}")
    _say(f"SSA {method_label(ssa_spec)} on {settings.dataset}: {len(images)} unlabeled training images -> {folder}")
    start = time.perf_counter()
    fetched = run_workflow(SSA_CONFIG, overrides, fetch=["ssa#network", "ssa#trainer"])
    elapsed = time.perf_counter() - start
    network, trainer = unwrap_network(fetched["ssa#network"]), fetched["ssa#trainer"]
    if trainer.state.iteration == 0:
        raise RuntimeError(f"SSA ran 0 iterations on {len(images)} images (batch_size {overrides.get('batch_size')}); "
                           "use a smaller ssa_batch_size")
    if not (export_dir / "backbone_merged.pth").is_file():
        raise RuntimeError(f"SSA finished but wrote no {export_dir / 'backbone_merged.pth'}: {_read_json(export_dir / 'export.json')}")
    trainable_backbone, total_backbone = _count(network.backbone)
    trainable, _ = _count(network)
    record = {
        "folder": str(folder),
        "export_dir": str(export_dir),
        "merged": str(export_dir / "backbone_merged.pth"),
        "images": len(images),
        "epochs": int(trainer.state.epoch),
        "iterations": int(trainer.state.iteration),
        "time_s": round(elapsed, 3),
        "trainable_backbone_params": trainable_backbone,
        "backbone_params": total_backbone,
        "trainable_params": trainable,
        "finished": _now(),
    }
    _write_json(done_file, record)
    return {**record, "cached": False}


def _check_start_weights(weights_file: str, result: dict[str, Any]) -> Callable:
    """A ``before_run`` callback: compare SA's freshly built backbone with ``weights_file`` tensor by tensor
    (same-shape tensors must be equal; e.g. a resampled positional embedding is listed, not compared)."""
    import torch

    def check(parser) -> None:
        backbone = parser.get_parsed_content("backbone")
        reference = torch.load(weights_file, map_location="cpu", weights_only=True)
        state = backbone.state_dict()
        common = [k for k in reference if k in state and state[k].shape == reference[k].shape]
        equal = sum(bool(torch.equal(state[k].cpu(), reference[k])) for k in common)
        result["sa_start_check"] = {
            "weights": weights_file,
            "tensors_compared": len(common),
            "tensors_equal": equal,
            "not_compared": sorted(set(reference) - set(common)),
            "verified": bool(common) and equal == len(common),
        }
        if not result["sa_start_check"]["verified"]:
            _say(f"WARNING: SA's starting backbone differs from {weights_file} ({equal}/{len(common)} tensors equal)")

    return check


def _sa_stage(
    spec: DatasetSpec, settings: ESSASettings, sa_spec: PeftSpec, overrides: dict[str, Any], run_dir: Path,
    start_weights: str | None, result: dict[str, Any],
) -> dict[str, Any]:
    """Train SA (or reuse the finished stage of this run folder). Returns its record."""
    sa_dir, done_file = run_dir / "sa", run_dir / "sa" / "sa_done.json"
    done = _read_json(done_file)
    if done is not None and (run_dir / "model.pt").is_file():
        _say(f"SA: reusing the finished model {run_dir / 'model.pt'}")
        result["sa_start_check"] = done.get("sa_start_check")
        return {**done, "cached": True}
    train_overrides = {
        **overrides, "peft": sa_spec, "output_dir": str(sa_dir), "model_file": str(run_dir / "model.pt"),
        "adapter_file": str(run_dir / "adapter.pt"),
    }
    if start_weights is not None:
        train_overrides["backbone_weights"] = start_weights
    resume = _latest_epoch_checkpoint(sa_dir / "checkpoints", "last_checkpoint_")
    if resume is not None:
        train_overrides["resume_from"] = str(resume)
        _say(f"SA: resuming the interrupted run from {resume.name}")
    _say(f"SA {method_label(sa_spec)} on {settings.dataset} ({settings.fraction_label}) from "
         f"{start_weights or 'random initialisation'} -> {run_dir}")
    check = _check_start_weights(start_weights, result) if start_weights is not None else None
    start = time.perf_counter()
    fetched = run_workflow(spec.train_config, train_overrides,
                           fetch=["train#network", "train#trainer", "train_datalist", "batch_size", "drop_last"],
                           before_run=check)
    elapsed = time.perf_counter() - start
    network, trainer = unwrap_network(fetched["train#network"]), fetched["train#trainer"]
    if trainer.state.iteration == 0 or not (run_dir / "model.pt").is_file():
        raise RuntimeError(
            f"SA ran {trainer.state.iteration} iterations and wrote no model: {len(fetched['train_datalist'])} training "
            f"images, batch_size {fetched['batch_size']}{' with drop_last' if fetched['drop_last'] else ''}; use a "
            "smaller batch_size or a larger label_fraction"
        )
    trainable_backbone, total_backbone = _count(network.backbone)
    trainable, total = _count(network)
    record = {
        "time_s": round(elapsed, 3),
        "epochs": int(trainer.state.epoch),
        "iterations": int(trainer.state.iteration),
        "train_images": len(fetched["train_datalist"]),
        "trainable_backbone_params": trainable_backbone,
        "backbone_params": total_backbone,
        "trainable_params": trainable,
        "total_params": total,
        "start_weights": start_weights,
        "sa_start_check": result.get("sa_start_check"),
        "finished": _now(),
    }
    _write_json(done_file, record)
    return {**record, "cached": False}


def _evaluate(spec: DatasetSpec, overrides: dict[str, Any], run_dir: Path, split: str) -> dict[str, Any]:
    """Evaluate ``run_dir/model.pt`` on ``split``: ``{"key_metric": name, "metrics": {name: value}, ...}``
    (names without the bundle's ``val_`` prefix)."""
    eval_overrides = {**overrides, "model_file": str(run_dir / "model.pt"), "output_dir": str(run_dir / f"eval_{split}"),
                      "val_split": split}
    start = time.perf_counter()
    fetched = run_workflow([spec.train_config, spec.evaluate_config], eval_overrides,
                           fetch=["validate#evaluator", "val_datalist"])
    evaluator = fetched["validate#evaluator"]

    def name(key: str) -> str:
        return key[4:] if key.startswith("val_") else key

    metrics = {}
    for key, value in evaluator.state.metrics.items():
        try:
            metrics[name(key)] = float(value)
        except (TypeError, ValueError):
            metrics[name(key)] = value.tolist() if hasattr(value, "tolist") else value
    return {
        "key_metric": name(evaluator.state.key_metric_name),
        "metrics": metrics,
        "images": len(fetched["val_datalist"]),
        "time_s": round(time.perf_counter() - start, 3),
    }


# ---- one run ---------------------------------------------------------------------------------------------

def _settings_record(settings: ESSASettings, data_dir: str | None) -> dict[str, Any]:
    record = dataclasses.asdict(settings)
    record["sa_method"] = settings.sa_spec_given
    record["data_dir"] = data_dir or settings.data_dir
    record["backbone_weights"] = _weights_fingerprint(settings.backbone_weights)
    return _normalise(record)


def describe_error(err: BaseException) -> str:
    """``"Type: message"`` of the root cause first (MONAI wraps errors inside config expressions in a
    ``RuntimeError: Failed to evaluate ...``), then the first line of the wrapper it was raised through."""
    root, seen = err, {id(err)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    text = f"{type(root).__name__}: {root}"
    if root is not err:
        text += f" [raised through {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}]"
    return text


def _archive(folder: Path, why: str) -> None:
    target = folder.with_name(f"{folder.name}.prev-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    _say(f"{why}: moving the old run folder aside to {target}")
    shutil.move(str(folder), str(target))


def _link_export(run_dir: Path, export_dir: str) -> None:
    link = run_dir / "ssa_export"
    try:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(export_dir, run_dir), target_is_directory=True)
    except OSError:  # no symlinks here (e.g. some Windows setups): result.json names the folder anyway
        pass


def run_combination(
    settings: ESSASettings,
    output_root: str | os.PathLike[str] = "runs/essa",
    *,
    force: bool = False,
    raise_errors: bool = True,
) -> dict[str, Any]:
    """Run (or reuse) one ESSA combination and write its ``result.json``; see the module docstring.

    Returns the result dict; ``result["skipped"]`` is ``True`` when a finished run with the same settings
    was found (nothing was run). On failure ``result.json`` records ``status: failed``, the stage, the error
    and the traceback; then the exception is raised again, or with ``raise_errors=False`` the failed result
    is returned (``KeyboardInterrupt`` and other non-``Exception`` errors are always raised). A failure
    before the run folder is taken over (bad arguments) never replaces a finished ``result.json`` there: it
    goes to ``failed_attempt.json`` instead.
    """
    output_root = Path(output_root).resolve()
    run_dir = run_dir_of(settings, output_root)
    result: dict[str, Any] = {
        "status": "running", "dataset": settings.dataset, "row": settings.row_label, "ssa": settings.ssa,
        "ssa_method": settings.ssa_method if settings.ssa else None, "ssa_method_label": settings.ssa_label,
        "sa_method": settings.sa_spec_given, "sa_method_label": settings.sa_label,
        "label_fraction": float(settings.label_fraction), "report_split": settings.report_split,
        "run_dir": str(run_dir), "started": _now(), "times_s": {},
    }
    stage, claimed = "setup", False
    start = time.perf_counter()
    try:
        spec = dataset_spec(settings.dataset)
        result.update(bundle=spec.bundle, task=spec.task)
        sa_spec = resolve_method(settings.sa_spec_given)
        ssa_spec = resolve_method(settings.ssa_method) if settings.ssa else None
        if ssa_spec is not None:
            check_ssa_method(ssa_spec)
        data_dir = _resolve_data_dir(spec, settings)
        result["settings"] = record = _settings_record(settings, data_dir)

        previous = read_result(run_dir)
        if previous is not None and not force:
            if previous.get("status") == "ok" and previous.get("settings") == record:
                return {**previous, "skipped": True}
        if run_dir.exists():
            old = _read_json(run_dir / "settings.json")
            if force:
                _archive(run_dir, "force=True")
            elif old is not None and old != record:
                _archive(run_dir, "the settings changed")
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "settings.json", record)
        claimed = True

        sa_base = _sa_base_overrides(spec, settings, data_dir)
        stage = "ssa"
        start_weights = str(Path(settings.backbone_weights).resolve()) if settings.backbone_weights else None
        if ssa_spec is not None:
            ssa_record = _ssa_stage(spec, settings, ssa_spec, data_dir, sa_base, output_root)
            result["ssa_stage"] = ssa_record
            result["times_s"]["ssa"] = 0.0 if ssa_record["cached"] else ssa_record["time_s"]
            start_weights = ssa_record["merged"]
            _link_export(run_dir, ssa_record["export_dir"])

        stage = "split"
        overrides = {**sa_base, **_fraction_overrides(spec, settings, sa_base, run_dir / "split.json")}
        if (run_dir / "split.json").is_file():
            result["split_file"] = str(run_dir / "split.json")

        stage = "sa"
        sa_record = _sa_stage(spec, settings, sa_spec, overrides, run_dir, start_weights, result)
        result["sa_stage"] = {k: v for k, v in sa_record.items() if k != "sa_start_check"}
        result["times_s"]["sa"] = 0.0 if sa_record["cached"] else sa_record["time_s"]

        stage = "evaluate"
        result["evaluation"], result["metrics"] = {}, {}
        splits = [settings.val_split] + (["test"] if settings.test and settings.val_split != "test" else [])
        for split in splits:
            _say(f"evaluating {run_dir / 'model.pt'} on {split}")
            evaluation = _evaluate(spec, overrides, run_dir, split)
            result["metrics"][split] = evaluation.pop("metrics")
            result["evaluation"][split] = evaluation
        result["times_s"]["eval"] = round(sum(e["time_s"] for e in result["evaluation"].values()), 3)

        result["key_metric"] = result["evaluation"][settings.report_split]["key_metric"]
        result["key_metric_value"] = result["metrics"][settings.report_split][result["key_metric"]]
        ssa_params = result.get("ssa_stage", {}).get("trainable_backbone_params")
        result["params"] = {
            "ssa_trainable_backbone": ssa_params,
            "sa_trainable_backbone": sa_record["trainable_backbone_params"],
            "sa_trainable": sa_record["trainable_params"],
            "sa_total": sa_record["total_params"],
            "backbone_total": sa_record["backbone_params"],
        }
        result["files"] = {
            "model": str(run_dir / "model.pt"),
            "adapter": str(run_dir / "adapter.pt") if (run_dir / "adapter.pt").is_file() else None,
            "ssa_export": result.get("ssa_stage", {}).get("export_dir"),
            "sa_start_weights": start_weights,
        }
        result["status"] = "ok"
    except BaseException as err:
        result["status"] = "failed" if isinstance(err, Exception) else "interrupted"
        result["failed_stage"] = stage
        result["error"] = describe_error(err)
        result["traceback"] = traceback.format_exc(limit=-12)
        if raise_errors or not isinstance(err, Exception):
            raise
    finally:
        result["times_s"]["total"] = round(time.perf_counter() - start, 3)
        result["finished"] = _now()
        if result["status"] != "running":
            target = run_dir / RESULT_FILE
            if not claimed and result["status"] != "ok" and (read_result(run_dir) or {}).get("status") == "ok":
                target = run_dir / "failed_attempt.json"  # keep the finished result of earlier settings
            try:
                _write_json(target, result)
            except OSError as write_err:  # never hide the run's own error behind this one
                print(f"[essa] could not write {target}: {write_err}", file=sys.stderr)
    return result


def run_essa(
    dataset: str = "isic_cls",
    ssa_method: PeftSpec | None = "apla",
    sa_method: PeftSpec | None = None,
    label_fraction: float = 1.0,
    *,
    output_root: str | os.PathLike[str] = "runs/essa",
    force: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Run the whole ESSA pipeline once: SSA with ``ssa_method`` on the dataset's unlabeled training
    images, SA with ``sa_method`` (default: the same) from the SSA-exported merged backbone on
    ``label_fraction`` of the labels, evaluation on ``val_split`` (and ``test`` with ``test=True``).

    Args:
        dataset, ssa_method, sa_method, label_fraction: see :class:`ESSASettings`.
        output_root: folder of all runs; this one goes to ``<output_root>/<dataset>/<ssa>-<sa>/frac<f>/``.
        force: run again even when a finished ``result.json`` with the same settings exists (the old
            folder is moved aside, not deleted).
        **settings: the other :class:`ESSASettings` fields (``ssa``, ``data_dir``, ``backbone_weights``,
            ``backbone_kwargs``, ``img_size``, ``epochs``, ``ssa_epochs``, ``ssa_overrides``, ``test``, ...).

    Returns:
        the ``result.json`` content: ``status``, ``key_metric`` / ``key_metric_value`` (on the report split),
        ``metrics`` per split, ``params`` (trainable parameters), ``times_s`` (wall seconds per stage), paths.

    Raises:
        whatever the failing stage raised (after recording it in ``result.json``).
    """
    config = ESSASettings(dataset=dataset, ssa_method=ssa_method, sa_method=sa_method,
                          label_fraction=label_fraction, **settings)
    return run_combination(config, output_root, force=force)
