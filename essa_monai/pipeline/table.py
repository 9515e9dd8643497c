"""Results tables of an ESSA grid, laid out like the papers': one row per method, one column per
dataset and label fraction (the dataset's key metric), plus the trainable parameters."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Sequence

__all__ = ["TableColumn", "table_columns", "results_table", "write_tables", "format_markdown", "LONG_FIELDS"]

#: columns of the long CSV (one line per combination)
LONG_FIELDS = (
    "dataset", "label_fraction", "row", "ssa_method_label", "sa_method_label", "status", "skipped", "report_split",
    "key_metric", "key_metric_value", "ssa_trainable_backbone_params", "sa_trainable_backbone_params",
    "sa_trainable_params", "ssa_s", "sa_s", "eval_s", "total_s", "failed_stage", "error", "run_dir",
)


class TableColumn(tuple):
    """``(dataset, fraction, metric, split)`` with its header text."""

    def __new__(cls, dataset: str, fraction: float, metric: str, split: str):
        return super().__new__(cls, (dataset, float(fraction), metric, split))

    @property
    def header(self) -> str:
        dataset, fraction, metric, split = self
        return f"{dataset} {fraction * 100:g}% {metric} ({split})"


def table_columns(datasets: Sequence[str], fractions: dict[str, Sequence[float]], metrics: dict[str, str],
                  split: str) -> list[TableColumn]:
    """Columns in grid order: each dataset, each of its fractions."""
    return [TableColumn(d, f, metrics[d], split) for d in datasets for f in fractions[d]]


def _row_params(results: list[dict[str, Any]], key: str) -> int | None:
    for result in results:
        value = (result.get("params") or {}).get(key)
        if result.get("status") == "ok" and value is not None:
            return int(value)
    return None


def results_table(results: Sequence[dict[str, Any]], rows: Sequence[str], columns: Sequence[TableColumn]) -> list[dict[str, Any]]:
    """One dict per row: ``method``, ``ssa_trainable_backbone_params``, ``sa_trainable_backbone_params`` and
    each column's header -> the key metric value (a float), ``"failed"``, or ``None`` (not run)."""
    index = {(r.get("row"), r.get("dataset"), float(r.get("label_fraction", 0))): r for r in results}
    table = []
    for row in rows:
        mine = [r for r in results if r.get("row") == row]
        line: dict[str, Any] = {
            "method": row,
            "ssa_trainable_backbone_params": _row_params(mine, "ssa_trainable_backbone"),
            "sa_trainable_backbone_params": _row_params(mine, "sa_trainable_backbone"),
        }
        for column in columns:
            result = index.get((row, column[0], column[1]))
            if result is None:
                line[column.header] = None
            elif result.get("status") != "ok":
                line[column.header] = "failed"
            else:
                line[column.header] = result.get("key_metric_value")
        table.append(line)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{100 * value:.2f}"


def _params(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def format_markdown(table: Sequence[dict[str, Any]], columns: Sequence[TableColumn], title: str | None = None,
                    failures: Sequence[dict[str, Any]] = ()) -> str:
    """Markdown table: metric values in percent (2 decimals), parameters with thousands separators."""
    headers = ["method", "SSA trainable params", "SA trainable params", *(f"{c.header} %" for c in columns)]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for line in table:
        cells = [line["method"], _params(line["ssa_trainable_backbone_params"]),
                 _params(line["sa_trainable_backbone_params"]), *(_cell(line[c.header]) for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Trainable parameters are the backbone's (heads excluded); '-' means not run.")
    if failures:
        lines += ["", "Failed combinations:", ""]
        for r in failures:
            error = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
            lines.append(f"- {r.get('row')} on {r.get('dataset')} {float(r.get('label_fraction', 0)) * 100:g}% "
                         f"({r.get('failed_stage')}): {error}")
    return "\n".join(lines) + "\n"


def _long_row(result: dict[str, Any]) -> dict[str, Any]:
    params, times = result.get("params") or {}, result.get("times_s") or {}
    return {
        **{k: result.get(k) for k in LONG_FIELDS},
        "skipped": bool(result.get("skipped")),
        "error": (result.get("error") or "").splitlines()[0] if result.get("error") else None,
        "ssa_trainable_backbone_params": params.get("ssa_trainable_backbone"),
        "sa_trainable_backbone_params": params.get("sa_trainable_backbone"),
        "sa_trainable_params": params.get("sa_trainable"),
        "ssa_s": times.get("ssa"), "sa_s": times.get("sa"), "eval_s": times.get("eval"), "total_s": times.get("total"),
    }


def write_tables(results: Sequence[dict[str, Any]], rows: Sequence[str], columns: Sequence[TableColumn],
                 output_dir: str | os.PathLike[str], title: str | None = None, stem: str = "essa_results") -> dict[str, Path]:
    """Write ``<stem>.csv`` (the table, raw metric values in [0, 1]), ``<stem>.md`` (percent) and
    ``<stem>_runs.csv`` (one line per combination: status, error, times). Returns the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = results_table(results, rows, columns)
    paths = {"csv": output_dir / f"{stem}.csv", "markdown": output_dir / f"{stem}.md", "runs": output_dir / f"{stem}_runs.csv"}
    fields = ["method", "ssa_trainable_backbone_params", "sa_trainable_backbone_params", *(c.header for c in columns)]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for line in table:
            writer.writerow({k: ("" if v is None else v) for k, v in line.items()})
    failures = [r for r in results if r.get("status") != "ok"]
    paths["markdown"].write_text(format_markdown(table, columns, title, failures))
    with open(paths["runs"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(LONG_FIELDS))
        writer.writeheader()
        for result in results:
            writer.writerow({k: ("" if v is None else v) for k, v in _long_row(result).items()})
    return paths
