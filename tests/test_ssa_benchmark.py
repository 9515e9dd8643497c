"""The SSA benchmark measures each method in its own process and reports ratios to full SSA."""

from __future__ import annotations

import csv

import pytest

from PIL import Image

from essa_monai.ssa.benchmark import run_benchmark, write_results

TINY = dict(img_size=28, local_size=14, n_local=2, batch_size=4, steps=1, warmup_steps=1, n_prototypes=32,
            backbone_kwargs=dict(embed_dim=32, depth=2, num_heads=2))


def test_benchmark_reports_side_by_side_ratios_csv_and_chart(tmp_path):
    rows = run_benchmark(["full", "apla_r", "bitfit"], apla_r=8, **TINY)
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"full", "apla_r", "bitfit"}
    full, apla = by_method["full"], by_method["apla_r"]
    assert full["memory_ratio"] == full["step_time_ratio"] == full["throughput_ratio"] == 1.0
    assert full["trainable_backbone_params"] == full["total_backbone_params"]
    assert apla["trainable_backbone_params"] == 2 * 8 * (32 + 1)  # 2 blocks x 8 rows x (weight row + bias)
    for row in rows:
        assert row["peak_memory_mib"] > row["peak_above_baseline_mib"] > 0
        assert row["step_time_s"] > 0
        assert row["images_per_s"] == pytest.approx(4 / row["step_time_s"], rel=1e-2)  # batch of 4 images
        assert row["step_time_ratio"] == pytest.approx(row["step_time_s"] / full["step_time_s"], abs=1e-3)
        assert row["memory_ratio"] == pytest.approx(row["peak_memory_mib"] / full["peak_memory_mib"], abs=1e-3)

    paths = write_results(rows, tmp_path)
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["full", "apla_r", "bitfit"]
    assert "| apla_r | 528 |" in paths["markdown"].read_text()
    assert Image.open(paths["png"]).size[0] > 800


def test_a_failing_method_is_reported_not_fatal():
    rows = run_benchmark(["full", "vpt"], vpt_tokens=2, **{**TINY, "img_size": 30})  # 30 px: not a multiple of 14
    assert all("error" in r for r in rows)
    assert "multiple of the ViT patch size 14" in rows[0]["error"]
