"""ESSA grid: methods x datasets x label fractions, one :func:`run_combination` each, resumable, with a
results table at the end."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .bundles import key_metric_name
from .run import run_combination
from .settings import ESSASettings, read_result, run_dir_of, settings_options
from .specs import PeftSpec, dataset_spec
from .table import results_table, table_columns, write_tables

__all__ = ["essa_grid", "parse_methods", "as_list"]


def as_list(value: Any, cast=str) -> list[Any]:
    """``"a,b"`` / ``("a", "b")`` / ``"a"`` / ``0.1`` -> a list (python-fire hands over any of these)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [cast(v) if not isinstance(v, (dict, list)) else v for v in value]
    return [cast(value) if not isinstance(value, dict) else value]


def parse_methods(methods: str | Sequence[PeftSpec] | Mapping[str, Any]) -> list[tuple[PeftSpec, PeftSpec]]:
    """``(ssa_method, sa_method)`` pairs: ``"apla"`` -> SSA and SA with APLA; ``"apla:lora"`` -> SSA with
    APLA, SA with LoRA; a dict spec -> the same spec for both."""
    items = [methods] if isinstance(methods, Mapping) else as_list(methods)
    pairs = []
    for item in items:
        if isinstance(item, str) and ":" in item:
            ssa_method, sa_method = (part.strip() for part in item.split(":", 1))
            pairs.append((ssa_method, sa_method))
        else:
            pairs.append((item, item))
    return pairs


def _data_dir_for(data_dir: str | Mapping[str, str] | None, dataset: str) -> str | None:
    if isinstance(data_dir, Mapping):
        return data_dir.get(dataset)
    return data_dir  # one folder for every dataset (isic_seg and isic_cls share the ISIC 2018 root)


def _say(message: str) -> None:
    print(f"[essa-grid] {message}", flush=True)


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


@settings_options(exclude=("dataset", "ssa_method", "sa_method", "label_fraction"))
def essa_grid(
    methods: str | Sequence[PeftSpec] = "apla,lora",
    datasets: str | Sequence[str] = "isic_cls",
    fractions: float | str | Sequence[float] | Mapping[str, Sequence[float]] = 1.0,
    *,
    ssa: bool = True,
    baseline: bool = False,
    data_dir: str | Mapping[str, str] | None = None,
    output_root: str | os.PathLike[str] = "runs/essa",
    retry_failed: bool = True,
    force: bool = False,
    table_stem: str = "essa_results",
    **settings: Any,
) -> dict[str, Any]:
    """Run ESSA over methods x datasets x label fractions, then write the results table.

    The tables are essa_results.csv/.md (rows = methods, columns = dataset/fraction key metric, plus
    trainable parameters) and essa_results_runs.csv in output_root. A finished combination (same settings) is skipped, so a grid resumes; a failing one is
    recorded (status failed, stage, error) and the grid goes on. SSA runs once per method and dataset,
    shared by all label fractions; each dataset's split file holds all of its fractions, nested.

    Args:
        methods: comma-separated presets or specs, e.g. full,apla,lora,bitfit,vpt; apla:lora means SSA
            with APLA, SA with LoRA (see essa_monai.pipeline.METHOD_PRESETS).
        datasets: comma-separated subset of isic_seg, isic_cls, cxr14.
        fractions: label fractions in (0, 1] for every dataset, e.g. 0.01,0.1,1.0, or a JSON dict like
            '{"cxr14": [0.01, 1.0], "isic_cls": [1.0]}'.
        ssa: False means no SSA at all (every row is an SA-only baseline).
        baseline: also run every SA method without SSA (rows '<method> (no SSA)').
        data_dir: one folder for all datasets, or a JSON dict like '{"cxr14": "/data/cxr14", "isic_cls":
            "/data/ISIC2018"}'; None means the synthetic demo data.
        output_root: where the runs and the tables go.
        retry_failed: run combinations recorded as failed again (False keeps their failure).
        force: rerun finished combinations too (their folders are moved aside, not deleted).
        table_stem: file name stem of the tables in output_root.

    Returns:
        ``{"results": [result dicts], "table": [row dicts], "tables": {"csv", "markdown", "runs": path},
        "markdown": text, "counts": {"ok", "failed", "skipped", "ran"}}``.
    """
    pairs = parse_methods(methods)
    names = as_list(datasets)
    for name in names:
        dataset_spec(name)  # unknown dataset: fail before running anything
    if isinstance(fractions, Mapping):
        per_dataset = {d: [float(f) for f in as_list(fractions.get(d, [1.0]), float)] for d in names}
    else:
        per_dataset = {d: as_list(fractions, float) for d in names}

    plans: list[tuple[PeftSpec, PeftSpec, bool]] = []
    for ssa_method, sa_method in pairs:
        plans.append((ssa_method, sa_method, ssa))
    if baseline and ssa:
        for _, sa_method in pairs:
            if (sa_method, sa_method, False) not in plans:
                plans.append((sa_method, sa_method, False))

    combos: list[ESSASettings] = []
    for name in names:
        for ssa_method, sa_method, with_ssa in plans:
            for fraction in per_dataset[name]:
                combos.append(ESSASettings(
                    dataset=name, ssa_method=ssa_method, sa_method=sa_method, label_fraction=fraction, ssa=with_ssa,
                    data_dir=_data_dir_for(data_dir, name), **settings,
                ))
    rows = list(dict.fromkeys(c.row_label for c in combos))
    output_root = Path(output_root).resolve()
    _say(f"{len(combos)} combinations: {len(rows)} methods x {len(names)} datasets x fractions "
         f"{ {d: per_dataset[d] for d in names} } -> {output_root}")

    results: list[dict[str, Any]] = []
    counts = {"ok": 0, "failed": 0, "skipped": 0, "ran": 0}
    grid_start, run_seconds = time.perf_counter(), 0.0
    for i, combo in enumerate(combos, 1):
        tag = f"[{i}/{len(combos)}] {combo.dataset} {combo.label_fraction * 100:g}% {combo.row_label}"
        previous = read_result(run_dir_of(combo, output_root))
        if previous is not None and previous.get("status") == "failed" and not retry_failed and not force:
            results.append({**previous, "skipped": True})
            counts["failed"] += 1
            counts["skipped"] += 1
            _say(f"{tag}: skipped (failed before, retry_failed=False): {previous.get('error')}")
            continue
        _say(f"{tag}: starting")
        start = time.perf_counter()
        result = run_combination(combo, output_root, force=force, raise_errors=False,  # failures are recorded
                                 split_fractions=per_dataset[combo.dataset])
        elapsed = time.perf_counter() - start
        results.append(result)
        if result.get("skipped"):
            counts["skipped"] += 1
            counts["ok"] += 1
            _say(f"{tag}: skipped, finished before ({result.get('key_metric')} {result.get('key_metric_value'):.4f})")
            continue
        counts["ran"] += 1
        run_seconds += elapsed
        remaining = sum(1 for c in combos[i:] if (read_result(run_dir_of(c, output_root)) or {}).get("status") != "ok")
        eta = f" [about {_format_seconds(run_seconds / counts['ran'] * remaining)} left]" if remaining else ""
        if result.get("status") == "ok":
            counts["ok"] += 1
            times = result.get("times_s", {})
            ssa_part = ("SSA reused" if result.get("ssa_stage", {}).get("cached") else f"SSA {times['ssa']:.1f} s"
                        ) if "ssa" in times else "no SSA"
            sa_part = "SA reused" if result.get("sa_stage", {}).get("cached") else f"SA {times.get('sa', 0):.1f} s"
            _say(f"{tag}: done in {elapsed:.1f} s ({ssa_part}, {sa_part}, eval {times.get('eval', 0):.1f} s): "
                 f"{result['key_metric']} ({result['report_split']}) {result['key_metric_value']:.4f}{eta}")
        else:
            counts["failed"] += 1
            _say(f"{tag}: FAILED at {result.get('failed_stage')} after {elapsed:.1f} s: {result.get('error')}{eta}")

    split = combos[0].report_split if combos else "validation"
    metrics = {d: key_metric_name(dataset_spec(d).train_config).removeprefix("val_") for d in names}
    columns = table_columns(names, per_dataset, metrics, split)
    title = f"ESSA results: {', '.join(names)} ({split}; key metric x 100)"
    paths = write_tables(results, rows, columns, output_root, title=title, stem=table_stem)
    table = results_table(results, rows, columns)
    markdown = paths["markdown"].read_text()
    _say(f"finished in {_format_seconds(time.perf_counter() - grid_start)}: {counts['ok']} ok "
         f"({counts['skipped']} of them finished before), {counts['failed']} failed")
    print(markdown, flush=True)
    _say(f"written: {', '.join(str(p) for p in paths.values())}")
    return {"results": results, "table": table, "tables": paths, "markdown": markdown, "counts": counts}
