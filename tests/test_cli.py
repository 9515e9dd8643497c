"""The ``essa-monai`` console script, as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("essa-monai")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "essa_monai.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300)


def parse_counts(stdout: str) -> dict[str, tuple[int, int]]:
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"(.+?)\s{2,}([\d,]+)\s+([\d,]+)\s+[\d.]+%$", line)
        if m:
            rows[m.group(1).strip()] = (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")))
    return rows


def test_params_prints_real_vit_base_counts():
    result = run_cli("params", "--backbone", "vit_base_patch14_dinov2")
    assert result.returncode == 0, result.stderr
    rows = parse_counts(result.stdout)
    total = 85_724_928  # DINOv2 ViT-B/14 at 224 px (16x16 grid + CLS positional embeddings)
    assert rows["full"] == (total, total)
    assert rows["frozen"] == (0, total)
    assert rows["apla (all rows of W_O)"][0] == 12 * (768 * 768 + 768)  # 7.09M
    assert rows["apla r=128"][0] == 12 * 128 * (768 + 1)  # 1.18M: 128 rows of weight and bias
    assert rows["lora r=4 (q,v)"][0] == 12 * 2 * (4 * 768 + 768 * 4)  # 147K
    assert rows["vpt deep (10 tokens)"][0] == 12 * 10 * 768


@pytest.mark.parametrize("backbone", ["vit_giant_patch14_reg4_dinov2"])
def test_params_handles_giant_without_allocating_it(backbone):
    result = run_cli("params", "--backbone", backbone, "--apla_r", "64")
    assert result.returncode == 0, result.stderr
    rows = parse_counts(result.stdout)
    assert rows["apla r=64"][0] == 40 * 64 * (1536 + 1)
    assert rows["full"][0] > 1_100_000_000


def test_params_rejects_an_unknown_backbone():
    result = run_cli("params", "--backbone", "vit_huge")
    assert result.returncode != 0
    assert "unknown DINOv2 backbone 'vit_huge'" in result.stderr
