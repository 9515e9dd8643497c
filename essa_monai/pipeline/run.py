"""One ESSA run: SSA with method M on a dataset's unlabeled training images, SA with method M' from the
SSA-adapted backbone on a label fraction, then evaluation; everything recorded in ``result.json``.

Layout under ``output_root`` (default ``runs/essa``)::

    <dataset>/splits/seed<seed>-<hash>.json      the label-fraction split file, made once per seed and data folder
    <dataset>/ssa/<ssa method>-<settings hash>/   SSA, shared by every SA method and label fraction
        images.json        the unlabeled training images SSA saw
        settings.json      what this SSA was run with (the hash names the folder)
        run/               SSA checkpoints (an interrupted SSA resumes from the last epoch) and TensorBoard
        export/            backbone_merged.pth (SA's starting weights), adapter.pt, export.json
        ssa_done.json      written last: time, trainable parameters
    <dataset>/<ssa method>-<sa method>/frac<f>/   one run ("none-<sa method>" without SSA: the baseline)
        settings.json      what this run was run with
        ssa_export ->      link to the SSA export used
        sa/                SA checkpoints, metrics.csv, TensorBoard; sa_done.json written last
        model.pt, model.json, adapter.pt    the SA model (PEFT merged), its PEFT config, adapter-only file
        eval_<split>/      metrics.csv of the evaluation on that split
        result.json        status, metrics, trainable parameters, wall times (written last, or on failure)

Finished work is never redone: a run whose ``result.json`` says ``ok`` for the same settings is returned
as it is; an SSA export or a finished SA stage with the same settings is reused; an interrupted SSA or SA
resumes from its last epoch checkpoint. A run folder written with other settings is moved aside to
``<folder>.prev-<time>`` (nothing is deleted). The stages are :mod:`essa_monai.pipeline.stages`.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from .plan import RunPlan, plan_run
from .records import archive, describe_error, now, read_json, write_json
from .settings import RESULT_FILE, ESSASettings, read_result, run_dir_of, settings_options
from .specs import PeftSpec
from .stages import STAGES

__all__ = ["run_essa", "run_combination"]


def _new_result(settings: ESSASettings, run_dir: Path) -> dict[str, Any]:
    return {
        "status": "running", "dataset": settings.dataset, "row": settings.row_label, "ssa": settings.ssa,
        "ssa_method": settings.ssa_method if settings.ssa else None, "ssa_method_label": settings.ssa_label,
        "sa_method": settings.sa_spec_given, "sa_method_label": settings.sa_label,
        "label_fraction": float(settings.label_fraction), "report_split": settings.report_split,
        "run_dir": str(run_dir), "started": now(), "times_s": {},
    }


def _claim_run_dir(plan: RunPlan, force: bool) -> dict[str, Any] | None:
    """The finished result of the same settings (nothing to do), or ``None`` after taking the run folder
    over: an outdated one (other settings, or ``force``) is moved aside first."""
    previous = read_result(plan.run_dir)
    if previous is not None and not force and previous.get("status") == "ok" and previous.get("settings") == plan.record:
        return previous
    if plan.run_dir.exists():
        if force:
            archive(plan.run_dir, "force=True")
        elif read_json(plan.run_dir / "settings.json") not in (None, plan.record):
            archive(plan.run_dir, "the settings changed")
    write_json(plan.run_dir / "settings.json", plan.record)
    return None


def _write_result(result: dict[str, Any], run_dir: Path, claimed: bool) -> None:
    target = run_dir / RESULT_FILE
    if not claimed and result["status"] != "ok" and (read_result(run_dir) or {}).get("status") == "ok":
        target = run_dir / "failed_attempt.json"  # keep the finished result of earlier settings
    try:
        write_json(target, result)
    except OSError as err:  # never hide the run's own error behind this one
        print(f"[essa] could not write {target}: {err}", file=sys.stderr)


def run_combination(
    settings: ESSASettings,
    output_root: str | os.PathLike[str] = "runs/essa",
    *,
    force: bool = False,
    raise_errors: bool = True,
    split_fractions: Sequence[float] = (),
) -> dict[str, Any]:
    """Run (or reuse) one ESSA combination and write its ``result.json``; see the module docstring.

    Returns the result dict; ``result["skipped"]`` is ``True`` when a finished run with the same settings
    was found (nothing was run). On failure ``result.json`` records ``status: failed``, the stage, the error
    and the traceback; then the exception is raised again, or with ``raise_errors=False`` the failed result
    is returned (``KeyboardInterrupt`` and other non-``Exception`` errors are always raised). A failure
    before the run folder is taken over (bad arguments) never replaces a finished ``result.json`` there: it
    goes to ``failed_attempt.json`` instead. ``split_fractions``: other label fractions the dataset's split
    file is made with, if this run makes it (a grid's fractions, so all are drawn together and nested).
    """
    output_root = Path(output_root).resolve()
    result = _new_result(settings, run_dir_of(settings, output_root))
    stage, claimed, start = "setup", False, time.perf_counter()
    try:
        plan = plan_run(settings, output_root, split_fractions)
        result.update(bundle=plan.spec.bundle, task=plan.spec.task, settings=plan.record)
        finished = _claim_run_dir(plan, force)
        if finished is not None:
            return {**finished, "skipped": True}
        claimed = True
        for stage, run_stage in STAGES:
            run_stage(plan, result)
        result["status"] = "ok"
    except BaseException as err:
        result.update(status="failed" if isinstance(err, Exception) else "interrupted", failed_stage=stage,
                      error=describe_error(err), traceback=traceback.format_exc(limit=-12))
        if raise_errors or not isinstance(err, Exception):
            raise
    finally:
        if result["status"] != "running":
            result["times_s"]["total"] = round(time.perf_counter() - start, 3)
            result["finished"] = now()
            _write_result(result, Path(result["run_dir"]), claimed)
    return result


@settings_options
def run_essa(
    dataset: str = "isic_cls",
    ssa_method: PeftSpec | None = "apla",
    sa_method: PeftSpec | None = None,
    label_fraction: float = 1.0,
    *,
    output_root: str = "runs/essa",
    force: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Run the whole ESSA pipeline once: SSA, then SA on a label fraction, then evaluation.

    SSA with ssa_method on the dataset's unlabeled training images, SA with sa_method from the
    SSA-exported merged backbone on label_fraction of the labels, evaluation on val_split (and test with
    test=True). Writes <output_root>/<dataset>/<ssa>-<sa>/frac<f>/ (the SA
    model, result.json); the SSA export goes to <output_root>/<dataset>/ssa/ and is reused by later runs
    with the same SSA settings. A finished run with the same settings is not run again.

    Args:
        output_root: folder of all runs; this one goes to <output_root>/<dataset>/<ssa>-<sa>/frac<f>/.
        force: rerun SA and evaluation even if this run finished before (the old folder is moved aside,
            not deleted).

    Returns:
        the ``result.json`` content: ``status``, ``key_metric`` / ``key_metric_value`` (on the report
        split), ``metrics`` per split, ``params`` (trainable parameters), ``times_s`` (wall seconds per
        stage), paths.
    """
    config = ESSASettings(dataset=dataset, ssa_method=ssa_method, sa_method=sa_method,
                          label_fraction=label_fraction, **settings)
    return run_combination(config, output_root, force=force)
