"""The isic_apla SSA bundle config, run as users run it (tiny model, synthetic data in the real layout)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from essa_monai.backbone import create_backbone
from essa_monai.data.demo import make_demo_data

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "bundles/isic_apla/configs/ssa.json"
TINY = {
    "backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "global_crops_size": 28,
    "local_crops_size": 14,
    "local_crops_number": 2,
    "n_prototypes": 32,
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "batch_size": 4,
    "knn_k": 3,
    "cache_rate": 0.0,
}


@pytest.fixture(scope="module")
def demo_isic(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, parts=("isic2018",))
    return out / "isic2018"


def cli_args(overrides: dict) -> list[str]:
    # fire parses Python literals: repr() gives False/None/{'a': 1}, which json.dumps would spell false/null
    return [f"--{k}={v!r}" if isinstance(v, (dict, list, bool)) or v is None else f"--{k}={v}" for k, v in overrides.items()]


def test_ssa_bundle_command_runs_to_completion_and_exports(tmp_path, demo_isic):
    out = tmp_path / "run"
    overrides = {**TINY, "data_dir": str(demo_isic), "output_dir": str(out), "export_dir": str(out / "export"),
                 "epochs": 2, "peft": {"method": "apla", "r": 8}}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", CONFIG, *cli_args(overrides)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "kNN (k=3) accuracy" in log  # the monitor ran on the Task 3 demo split
    assert "Epoch[2] Complete" in log or "Epoch: 2/2" in log or "epoch 2" in log.lower()

    export = json.loads((out / "export" / "export.json").read_text())
    assert export["peft"] == {"method": "apla", "r": 8, "seed": 0, "target": "attn.proj"}
    assert (out / "checkpoints" / "ssa_final.pt").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        merged = create_backbone("vit_small_patch14_dinov2", weights=out / "export" / "backbone_merged.pth",
                                 img_size=28, **TINY["backbone_kwargs"])
    assert merged(torch.randn(1, 3, 28, 28)).shape == (1, 32)


def test_ssa_bundle_resumes_from_its_checkpoint(tmp_path, demo_isic, monkeypatch):
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(ROOT)  # the config's % macros name bundles/common/... relative to the repo root
    base = {**TINY, "data_dir": str(demo_isic), "output_dir": str(tmp_path), "export_dir": str(tmp_path / "export"),
            "knn_monitor": False, "peft": {"method": "lora", "r": 2}}

    def run(**overrides):
        workflow = ConfigWorkflow(config_file=CONFIG, workflow_type=None, logging_file=False, **base, **overrides)
        workflow.initialize()
        workflow.run()
        trainer = workflow.parser.get_parsed_content("ssa#trainer")
        workflow.finalize()
        return trainer

    first = run(epochs=1)
    assert first.state.epoch == 1
    checkpoint = tmp_path / "checkpoints" / "ssa_final.pt"
    resumed = run(epochs=2, resume_from=str(checkpoint))
    assert resumed.state.epoch == 2
    assert resumed.state.iteration == 2 * first.state.iteration  # continued, did not start over


def test_missing_data_dir_is_named(tmp_path):
    from essa_monai.bundle_paths import prepare_data_dir

    with pytest.raises(FileNotFoundError, match="data_dir does not exist: .*nowhere"):
        prepare_data_dir(tmp_path / "nowhere")
