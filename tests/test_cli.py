"""The ``essa-monai`` console script, as a user runs it."""

from __future__ import annotations

import importlib
import inspect
import json
import os
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


# ---------------------------------------------------------------- the command list and each command's help


def test_help_lists_every_command_without_importing_torch_monai_or_timm():
    code = ("import sys\nfrom essa_monai import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('IMPORTED', sorted(m for m in ('torch', 'monai', 'timm', 'numpy', 'ignite') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PAGER": "cat"})
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout
    from essa_monai.cli import COMMANDS

    listed = re.findall(r"^ {5}(\w+)$", done.stdout + done.stderr, flags=re.M)  # fire writes this help to stderr
    assert listed == list(COMMANDS) == ["run_essa", "essa_grid", "split", "infer", "params", "benchmark_ssa"]
    assert "Run a bundle's trained model on images; write masks or predictions and a report." in done.stderr


def _documented_options(fn) -> dict[str, str]:
    """Each ``Args`` entry of ``fn``'s docstring, continuation lines joined: the text --help must show."""
    args = inspect.cleandoc(fn.__doc__).split("Args:\n", 1)[1].split("\n\n", 1)[0]
    options: dict[str, str] = {}
    for line in args.splitlines():
        entry = re.match(r"^ {4}(\w+): (.*)$", line)
        if entry:
            options[entry.group(1)] = entry.group(2)
        else:
            options[next(reversed(options))] += " " + line.strip()
    return options


@pytest.mark.parametrize("name", ["infer", "run_essa", "essa_grid", "split", "params", "benchmark_ssa"])
def test_command_help_shows_every_option_with_its_whole_description(name, capsys, monkeypatch):
    from essa_monai.cli import COMMANDS, main

    monkeypatch.setenv("PAGER", "cat")
    module, attr = COMMANDS[name].split(":")
    fn = getattr(importlib.import_module(module), attr)
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = " ".join("".join(capsys.readouterr()).split())  # fire writes help to stderr
    options = _documented_options(fn)
    assert set(options) == set(inspect.signature(fn).parameters)  # every option documented, once
    for option, description in options.items():
        assert f"--{option}=" in text or option.upper() in text
        assert " ".join(description.split()) in text, f"--{option}: description cut in --help"


def test_infer_help_describes_output_dir_and_the_whole_dicom_seg_text(capsys, monkeypatch):
    from essa_monai.cli import main

    monkeypatch.setenv("PAGER", "cat")
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    text = " ".join("".join(capsys.readouterr()).split())  # fire writes help to stderr
    assert "OUTPUT_DIR Type: 'str' folder for the masks, overlays, predictions and report.csv" in text
    assert "for DICOM inputs of segmentation bundles (needs the dicomseg extra: highdicom)." in text


def test_split_command_makes_the_file_the_bundle_then_reads_unchanged(tmp_path, capsys):
    from essa_monai.cli import main
    from essa_monai.data.demo import make_demo_data
    from essa_monai.pipeline.bundles import parse_config

    make_demo_data(tmp_path / "demo", parts=("isic2018",))
    data_dir, split_file = tmp_path / "demo" / "isic2018", tmp_path / "splits" / "task3.json"
    main(["split", "isic2018_task3", str(data_dir), str(split_file), "--fractions", "0.25,0.5"])
    assert capsys.readouterr().out.strip().startswith(f"{split_file}: training 28, training_50pct 14, training_25pct 7")
    mtime = split_file.stat().st_mtime_ns
    (train,) = parse_config("bundles/isic_cls_apla/configs/train.json",
                            {"data_dir": str(data_dir), "split_file": str(split_file), "label_fraction": 0.25},
                            "train_datalist")
    assert len(train) == 7 and split_file.stat().st_mtime_ns == mtime
    assert [i["id"] for i in train] == [i["id"] for i in json.loads(split_file.read_text())["training_25pct"]]
