"""The stages of one ESSA run, each a function ``stage(plan, result)`` that runs (or reuses) its bundle
workflow and records what it did in ``result``:

* :func:`split_stage`: the dataset's label-fraction split file, made once;
* :func:`ssa_stage`: SSA on the unlabeled training images with the dataset's SSA config, shared by every SA
  method and label fraction (``<dataset>/ssa/<method>-<settings hash>/``); skipped without SSA;
* :func:`sa_stage`: SA from the SSA export (or the given weights) on the label fraction;
* :func:`evaluate_stage`: the SA model on the validation (and test) split.

A finished stage is reused (its ``*_done.json`` is written last); an interrupted SSA or SA resumes from its
last epoch checkpoint.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

from ..sa.network import unwrap_network
from .bundles import parse_config, run_workflow
from .plan import RunPlan, make_split_file, weights_fingerprint
from .records import link, normalise, now, read_json, say, short_hash, write_json
from .specs import method_label

__all__ = ["split_stage", "ssa_stage", "sa_stage", "evaluate_stage", "STAGES"]


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


def split_stage(plan: RunPlan, result: dict[str, Any]) -> None:
    """Make (or check) the split file SA's ``train_datalist`` reads."""
    result["split_file"] = make_split_file(plan)


def ssa_stage(plan: RunPlan, result: dict[str, Any]) -> None:
    """SSA with ``plan.ssa_method`` on the images of SA's full labelled training pool, labels dropped (or
    reuse a finished SSA with the same settings); SA then starts from its merged export."""
    if plan.ssa_method is None:
        return
    settings, spec = plan.settings, plan.spec
    (train,) = parse_config(spec.train_config, plan.sa_overrides(label_fraction=1.0), "train_datalist")
    images = sorted(str(item["image"]) for item in train)
    overrides = plan.ssa_overrides()
    config = spec.ssa_config
    fingerprint = normalise({
        "dataset": settings.dataset, "data_dir": plan.data_dir, "peft": plan.ssa_method, "seed": settings.seed,
        "overrides": overrides, "weights": weights_fingerprint(settings.backbone_weights),
        "images": {"count": len(images), "sha1": short_hash(images, 40)}, "config": config,
    })
    folder = plan.output_root / settings.dataset / "ssa" / f"{method_label(plan.ssa_method)}-{short_hash(fingerprint)}"
    export_dir, done_file = folder / "export", folder / "ssa_done.json"
    done = read_json(done_file)
    if done is not None and (export_dir / "backbone_merged.pth").is_file():
        say(f"SSA {method_label(plan.ssa_method)} on {settings.dataset}: reusing the finished export {export_dir}")
        record = {**done, "cached": True}
    else:
        if spec.ssa_config_note:
            say(spec.ssa_config_note)
        write_json(folder / "settings.json", fingerprint)
        write_json(folder / "images.json", {"training": [{"image": p} for p in images]})
        overrides.update({"peft": plan.ssa_method, "seed": settings.seed, "data_dir": plan.data_dir,
                          "ssa_images": str(folder / "images.json"), "output_dir": str(folder / "run"),
                          "export_dir": str(export_dir)})
        resume = _latest_epoch_checkpoint(folder / "run" / "checkpoints", "checkpoint_")
        if resume is not None:
            overrides["resume_from"] = str(resume)
            say(f"SSA: resuming the interrupted run from {resume.name}")
        say(f"SSA {method_label(plan.ssa_method)} on {settings.dataset} ({config}): {len(images)} unlabeled "
            f"training images -> {folder}")
        record = _run_ssa(config, overrides, folder, len(images))
        write_json(done_file, record)
        record = {**record, "cached": False}
    result["ssa_stage"] = record
    result["times_s"]["ssa"] = 0.0 if record["cached"] else record["time_s"]
    link(plan.run_dir / "ssa_export", record["export_dir"])


def _run_ssa(config: str, overrides: dict[str, Any], folder: Path, n_images: int) -> dict[str, Any]:
    export_dir = Path(overrides["export_dir"])
    start = time.perf_counter()
    fetched = run_workflow(config, overrides, fetch=["ssa#network", "ssa#trainer"])
    elapsed = time.perf_counter() - start
    network, trainer = unwrap_network(fetched["ssa#network"]), fetched["ssa#trainer"]
    if trainer.state.iteration == 0:
        raise RuntimeError(f"SSA ran 0 iterations on {n_images} images (batch_size {overrides.get('batch_size')}); "
                           "use a smaller ssa_batch_size")
    if not (export_dir / "backbone_merged.pth").is_file():
        raise RuntimeError(f"SSA finished but wrote no {export_dir / 'backbone_merged.pth'}: {read_json(export_dir / 'export.json')}")
    trainable_backbone, total_backbone = _count(network.backbone)
    return {
        "folder": str(folder), "config": config, "export_dir": str(export_dir),
        "merged": str(export_dir / "backbone_merged.pth"), "images": n_images, "epochs": int(trainer.state.epoch),
        "iterations": int(trainer.state.iteration), "time_s": round(elapsed, 3),
        "trainable_backbone_params": trainable_backbone, "backbone_params": total_backbone,
        "trainable_params": _count(network)[0], "finished": now(),
    }


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
            "weights": weights_file, "tensors_compared": len(common), "tensors_equal": equal,
            "not_compared": sorted(set(reference) - set(common)), "verified": bool(common) and equal == len(common),
        }
        if not result["sa_start_check"]["verified"]:
            say(f"WARNING: SA's starting backbone differs from {weights_file} ({equal}/{len(common)} tensors equal)")

    return check


def _start_weights(plan: RunPlan, result: dict[str, Any]) -> str | None:
    if "ssa_stage" in result:
        return result["ssa_stage"]["merged"]
    return str(Path(plan.settings.backbone_weights).resolve()) if plan.settings.backbone_weights else None


def sa_stage(plan: RunPlan, result: dict[str, Any]) -> None:
    """Train SA (or reuse the finished SA of this run folder)."""
    run_dir, start_weights = plan.run_dir, _start_weights(plan, result)
    sa_dir, done_file = run_dir / "sa", run_dir / "sa" / "sa_done.json"
    done = read_json(done_file)
    result["files"] = {"model": str(run_dir / "model.pt"), "ssa_export": result.get("ssa_stage", {}).get("export_dir"),
                       "sa_start_weights": start_weights}
    if done is not None and (run_dir / "model.pt").is_file():
        say(f"SA: reusing the finished model {run_dir / 'model.pt'}")
        result["sa_start_check"] = done.get("sa_start_check")
        record = {**done, "cached": True}
    else:
        overrides = {**plan.sa_overrides(), "peft": plan.sa_method, "output_dir": str(sa_dir),
                     "model_file": str(run_dir / "model.pt"), "adapter_file": str(run_dir / "adapter.pt")}
        if start_weights is not None:
            overrides["backbone_weights"] = start_weights
        resume = _latest_epoch_checkpoint(sa_dir / "checkpoints", "last_checkpoint_")
        if resume is not None:
            overrides["resume_from"] = str(resume)
            say(f"SA: resuming the interrupted run from {resume.name}")
        say(f"SA {method_label(plan.sa_method)} on {plan.settings.dataset} ({plan.settings.fraction_label}) from "
            f"{start_weights or 'random initialisation'} -> {run_dir}")
        check = _check_start_weights(start_weights, result) if start_weights is not None else None
        record = {**_run_sa(plan, overrides, check), "start_weights": start_weights,
                  "sa_start_check": result.get("sa_start_check")}
        write_json(done_file, record)
        record = {**record, "cached": False}
    result["sa_stage"] = {k: v for k, v in record.items() if k != "sa_start_check"}
    result["times_s"]["sa"] = 0.0 if record["cached"] else record["time_s"]
    result["files"]["adapter"] = str(run_dir / "adapter.pt") if (run_dir / "adapter.pt").is_file() else None


def _run_sa(plan: RunPlan, overrides: dict[str, Any], check: Callable | None) -> dict[str, Any]:
    start = time.perf_counter()
    fetched = run_workflow(plan.spec.train_config, overrides,
                           fetch=["train#network", "train#trainer", "train_datalist", "batch_size", "drop_last"],
                           before_run=check)
    elapsed = time.perf_counter() - start
    network, trainer = unwrap_network(fetched["train#network"]), fetched["train#trainer"]
    if trainer.state.iteration == 0 or not (plan.run_dir / "model.pt").is_file():
        raise RuntimeError(
            f"SA ran {trainer.state.iteration} iterations and wrote no model: {len(fetched['train_datalist'])} training "
            f"images, batch_size {fetched['batch_size']}{' with drop_last' if fetched['drop_last'] else ''}; use a "
            "smaller batch_size or a larger label_fraction"
        )
    trainable_backbone, total_backbone = _count(network.backbone)
    trainable, total = _count(network)
    return {
        "time_s": round(elapsed, 3), "epochs": int(trainer.state.epoch), "iterations": int(trainer.state.iteration),
        "train_images": len(fetched["train_datalist"]), "trainable_backbone_params": trainable_backbone,
        "backbone_params": total_backbone, "trainable_params": trainable, "total_params": total, "finished": now(),
    }


def _evaluate(plan: RunPlan, split: str) -> dict[str, Any]:
    """Evaluate ``run_dir/model.pt`` on ``split``: ``{"key_metric": name, "metrics": {name: value}, ...}``
    (names without the bundle's ``val_`` prefix)."""
    overrides = {**plan.sa_overrides(), "model_file": str(plan.run_dir / "model.pt"),
                 "output_dir": str(plan.run_dir / f"eval_{split}"), "val_split": split}
    start = time.perf_counter()
    fetched = run_workflow([plan.spec.train_config, plan.spec.evaluate_config], overrides,
                           fetch=["validate#evaluator", "val_datalist"])
    evaluator = fetched["validate#evaluator"]

    def name(key: str) -> str:
        return key.removeprefix("val_")

    metrics = {}
    for key, value in evaluator.state.metrics.items():
        try:
            metrics[name(key)] = float(value)
        except (TypeError, ValueError):
            metrics[name(key)] = value.tolist() if hasattr(value, "tolist") else value
    return {"key_metric": name(evaluator.state.key_metric_name), "metrics": metrics,
            "images": len(fetched["val_datalist"]), "time_s": round(time.perf_counter() - start, 3)}


def evaluate_stage(plan: RunPlan, result: dict[str, Any]) -> None:
    """Evaluate on ``val_split`` (and ``test`` with ``test=True``); the key metric comes from the report split."""
    settings = plan.settings
    result["evaluation"], result["metrics"] = {}, {}
    for split in dict.fromkeys([settings.val_split] + (["test"] if settings.test else [])):
        say(f"evaluating {plan.run_dir / 'model.pt'} on {split}")
        evaluation = _evaluate(plan, split)
        result["metrics"][split] = evaluation.pop("metrics")
        result["evaluation"][split] = evaluation
    result["times_s"]["eval"] = round(sum(e["time_s"] for e in result["evaluation"].values()), 3)
    result["key_metric"] = result["evaluation"][settings.report_split]["key_metric"]
    result["key_metric_value"] = result["metrics"][settings.report_split][result["key_metric"]]
    ssa, sa = result.get("ssa_stage", {}), result["sa_stage"]
    result["params"] = {
        "ssa_trainable_backbone": ssa.get("trainable_backbone_params"),
        "sa_trainable_backbone": sa["trainable_backbone_params"], "sa_trainable": sa["trainable_params"],
        "sa_total": sa["total_params"], "backbone_total": sa["backbone_params"],
    }


#: the stages in order, as ``(name, function)``; a failure records the name
STAGES: tuple[tuple[str, Callable[[RunPlan, dict[str, Any]], None]], ...] = (
    ("split", split_stage), ("ssa", ssa_stage), ("sa", sa_stage), ("evaluate", evaluate_stage),
)
