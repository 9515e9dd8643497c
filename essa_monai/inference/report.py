"""The run report: ``report.csv`` and ``report.json`` in ``--output_dir``, one row per input.

Columns: ``input`` (path), ``output_stem``, ``format``, ``status`` (``ok`` / ``skipped``), ``reason``
(why skipped, or a note such as existing outputs kept), ``time_ms``, ``outputs`` (``;``-separated in the
CSV), ``predicted`` and ``probabilities`` (classification; a JSON object in the CSV), ``model``,
``bundle_version``, ``adapter_hash``; ``patient_id`` / ``patient_name`` only with
``include_patient_ids``. The CSV ends with a comment line ``# N ok, M skipped``; the JSON has the run's
settings, the rows and ``summary``. Both describe the latest run and are replaced by each run.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from .writers import write_json

__all__ = ["REPORT_COLUMNS", "summary_line", "write_report"]

REPORT_COLUMNS = ["input", "output_stem", "format", "status", "reason", "time_ms", "outputs", "predicted",
                  "probabilities", "model", "bundle_version", "adapter_hash"]
PATIENT_COLUMNS = ["patient_id", "patient_name"]


def summary_line(rows: list[dict[str, Any]]) -> str:
    ok = sum(r["status"] == "ok" for r in rows)
    return f"{ok} ok, {len(rows) - ok} skipped"


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def write_report(output_dir: str | os.PathLike[str], rows: list[dict[str, Any]], run: dict[str, Any],
                 include_patient_ids: bool = False) -> dict[str, str]:
    """Write ``report.csv`` and ``report.json`` atomically; returns their paths."""
    columns = REPORT_COLUMNS + (PATIENT_COLUMNS if include_patient_ids else [])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    text.write(f"# {summary_line(rows)}\n")

    def write_csv(tmp: str) -> None:
        Path(tmp).write_text(text.getvalue())

    out = Path(output_dir)
    clean = [{c: row.get(c) for c in columns} for row in rows]
    ok = sum(r["status"] == "ok" for r in rows)
    content = {**run, "items": clean, "summary": {"ok": ok, "skipped": len(rows) - ok, "line": summary_line(rows)}}
    return {"csv": atomic_write(out / "report.csv", write_csv), "json": write_json(out / "report.json", content)}
