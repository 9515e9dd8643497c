"""The ESSA pipeline (SSA -> SA -> evaluation) and its grid, run as users run them: the real bundle configs,
tiny random-init ViTs, synthetic data in the official layouts."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import essa_monai.backbone
from essa_monai.data.demo import make_demo_data
from essa_monai.pipeline import ESSASettings, essa_grid, read_result, run_essa
from essa_monai.pipeline import stages as pipeline_stages

ROOT = Path(__file__).resolve().parents[1]
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}
TINY = {
    "backbone_kwargs": TINY_VIT,
    "img_size": 28,
    "epochs": 1,
    "batch_size": 8,
    "ssa_epochs": 1,
    "ssa_batch_size": 8,
    "ssa_overrides": {"local_crops_size": 14, "local_crops_number": 2, "n_prototypes": 32, "head_hidden_dim": 32,
                      "head_bottleneck_dim": 16, "cache_rate": 0.0},
}
APLA_PARAMS = 2 * (32 * 32 + 32)  # W_O weight + bias of each of the 2 blocks
LORA_PARAMS = 2 * 2 * (4 * 32 + 32 * 4)  # rank-4 A and B on Q and V of each of the 2 blocks


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, parts=("isic2018", "chestxray14"))
    return out


@pytest.fixture
def backbone_calls(monkeypatch):
    """Record every ``create_backbone`` call the bundles make: its weights file and the state it built."""
    calls = []
    original = essa_monai.backbone.create_backbone

    def recording(*args, **kwargs):
        model = original(*args, **kwargs)
        calls.append({"weights": kwargs.get("weights"), "state": {k: v.clone() for k, v in model.state_dict().items()}})
        return model

    monkeypatch.setattr(essa_monai.backbone, "create_backbone", recording)
    return calls


def test_single_run_apla_ssa_then_apla_sa_starts_from_the_ssa_export(tmp_path, demo, backbone_calls):
    result = run_essa("isic_cls", "apla", data_dir=str(demo / "isic2018"), output_root=tmp_path, **TINY)

    run_dir = tmp_path / "isic_cls" / "apla-apla" / "frac1"
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["row"] == "apla"
    assert (on_disk["dataset"], on_disk["label_fraction"], on_disk["ssa_method"], on_disk["sa_method"]) == (
        "isic_cls", 1.0, "apla", "apla")
    assert on_disk["key_metric"] == "balanced_accuracy" and on_disk["report_split"] == "validation"
    value = on_disk["key_metric_value"]
    assert value == on_disk["metrics"]["validation"]["balanced_accuracy"] and 0.0 <= value <= 1.0
    assert value * 7 == pytest.approx(round(value * 7))  # a mean of 7 per-class recalls, each k/1 on the demo split
    assert on_disk["evaluation"]["validation"]["images"] == 7
    assert on_disk["params"]["ssa_trainable_backbone"] == APLA_PARAMS
    assert on_disk["params"]["sa_trainable_backbone"] == APLA_PARAMS
    assert on_disk["sa_stage"]["train_images"] == 28 and on_disk["ssa_stage"]["images"] == 28
    assert all(on_disk["times_s"][k] > 0 for k in ("ssa", "sa", "eval", "total"))
    assert result["key_metric_value"] == value

    # SA's backbone was built from the SSA export, and the export is not a random init: SSA changed W_O
    merged_file = Path(on_disk["files"]["sa_start_weights"])
    assert merged_file == Path(on_disk["ssa_stage"]["export_dir"]) / "backbone_merged.pth"
    assert (run_dir / "ssa_export").resolve() == merged_file.parent.resolve()
    merged = torch.load(merged_file, map_location="cpu", weights_only=True)
    ssa_start = next(c for c in backbone_calls if c["weights"] is None)["state"]
    sa_start = next(c for c in backbone_calls if c["weights"] == str(merged_file))["state"]
    assert set(sa_start) == set(merged)
    assert all(torch.equal(sa_start[k], merged[k]) for k in merged)
    for block in range(2):
        proj = f"blocks.{block}.attn.proj.weight"
        assert (sa_start[proj] - ssa_start[proj]).abs().max() > 1e-6  # adapted by SSA
        assert torch.equal(sa_start[f"blocks.{block}.attn.qkv.weight"], ssa_start[f"blocks.{block}.attn.qkv.weight"])
    assert on_disk["sa_start_check"] == {"weights": str(merged_file), "tensors_compared": len(merged),
                                         "tensors_equal": len(merged), "not_compared": [], "verified": True}
    # the SA model descends from the export: APLA-SA froze Q/K/V, which still hold the export's values
    model = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    assert torch.equal(model["backbone.blocks.1.attn.qkv.weight"], merged["blocks.1.attn.qkv.weight"])
    assert not torch.equal(model["backbone.blocks.1.attn.proj.weight"], merged["blocks.1.attn.proj.weight"])

    # the same call again: finished work is returned, nothing is built or run
    n_calls, mtime = len(backbone_calls), (run_dir / "result.json").stat().st_mtime_ns
    again = run_essa("isic_cls", "apla", data_dir=str(demo / "isic2018"), output_root=tmp_path, **TINY)
    assert again["skipped"] is True and again["key_metric_value"] == value
    assert len(backbone_calls) == n_calls and (run_dir / "result.json").stat().st_mtime_ns == mtime


def test_grid_writes_the_table_resumes_and_records_a_failing_method(tmp_path, demo, monkeypatch):
    kwargs = dict(methods="apla,bogus,lora", datasets="cxr14", fractions="0.1,1.0", data_dir=str(demo / "chestxray14"),
                  output_root=tmp_path, **TINY)
    out = essa_grid(**kwargs)
    assert out["counts"] == {"ok": 4, "failed": 2, "skipped": 0, "ran": 6}

    # the invalid method is recorded (fails before any work) and the method after it still ran
    failed = read_result(tmp_path / "cxr14" / "bogus-bogus" / "frac0.1")
    assert failed["status"] == "failed" and failed["failed_stage"] == "setup"
    assert "unknown PEFT method 'bogus'" in failed["error"]
    results = {(r["row"], r["label_fraction"]): r for r in out["results"]}
    assert results[("lora", 1.0)]["status"] == "ok"

    # one SSA per method, shared by both fractions; the fractions trained on different label counts
    ssa_folders = sorted(p.name.split("-")[0] for p in (tmp_path / "cxr14" / "ssa").iterdir() if not p.name.startswith("."))
    assert ssa_folders == ["apla", "lora"]
    for row in ("apla", "lora"):
        small, full = results[(row, 0.1)], results[(row, 1.0)]
        assert small["ssa_stage"]["export_dir"] == full["ssa_stage"]["export_dir"]
        assert [small["ssa_stage"]["cached"], full["ssa_stage"]["cached"]] == [False, True]
        assert small["sa_stage"]["train_images"] < full["sa_stage"]["train_images"] == full["ssa_stage"]["images"]

    with open(tmp_path / "essa_results.csv", newline="") as f:
        reader = csv.DictReader(f)
        table = list(reader)
    columns = ["cxr14 10% mean_auroc (validation)", "cxr14 100% mean_auroc (validation)"]
    assert reader.fieldnames == ["method", "ssa_trainable_backbone_params", "sa_trainable_backbone_params", *columns]
    assert [line["method"] for line in table] == ["apla", "bogus", "lora"]
    by_method = {line["method"]: line for line in table}
    assert by_method["apla"]["sa_trainable_backbone_params"] == str(APLA_PARAMS)
    assert by_method["lora"]["sa_trainable_backbone_params"] == str(LORA_PARAMS)
    assert [by_method["bogus"][c] for c in columns] == ["failed", "failed"]
    for row in ("apla", "lora"):
        for column, fraction in zip(columns, (0.1, 1.0)):
            assert float(by_method[row][column]) == pytest.approx(results[(row, fraction)]["key_metric_value"])
            assert results[(row, fraction)]["key_metric"] == "mean_auroc"
    markdown = (tmp_path / "essa_results.md").read_text()
    assert "| method | SSA trainable params | SA trainable params | cxr14 10% mean_auroc (validation) % |" in markdown
    assert f"| lora | {LORA_PARAMS:,} | {LORA_PARAMS:,} | " in markdown
    assert "| bogus | - | - | failed | failed |" in markdown
    assert "unknown PEFT method 'bogus'" in markdown
    with open(tmp_path / "essa_results_runs.csv", newline="") as f:
        assert [(r["row"], r["status"]) for r in csv.DictReader(f)] == [
            ("apla", "ok"), ("apla", "ok"), ("bogus", "failed"), ("bogus", "failed"), ("lora", "ok"), ("lora", "ok")]

    # rerun: finished combinations are skipped (no bundle workflow runs at all), the failed one is retried
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("cxr14/*-*/frac*/result.json")}
    workflows = []
    original = pipeline_stages.run_workflow
    monkeypatch.setattr(pipeline_stages, "run_workflow", lambda *a, **k: workflows.append(a[0]) or original(*a, **k))
    again = essa_grid(**kwargs)
    assert workflows == []
    assert again["counts"] == {"ok": 4, "failed": 2, "skipped": 4, "ran": 2}
    assert {p: p.stat().st_mtime_ns for p in mtimes if "bogus" not in str(p)} == {
        p: m for p, m in mtimes.items() if "bogus" not in str(p)}
    assert again["table"] == out["table"]


def test_baseline_without_ssa_starts_sa_from_the_given_weights(tmp_path, demo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(7)
        weights = essa_monai.backbone.create_backbone("vit_small_patch14_dinov2", img_size=28, **TINY_VIT)
    weights_file = tmp_path / "dinov2_tiny.pth"
    torch.save(weights.state_dict(), weights_file)

    result = run_essa("isic_cls", sa_method="bitfit", ssa=False, backbone_weights=str(weights_file),
                      data_dir=str(demo / "isic2018"), output_root=tmp_path / "runs", **TINY)
    assert result["status"] == "ok" and result["row"] == "bitfit (no SSA)"
    assert Path(result["run_dir"]) == tmp_path / "runs" / "isic_cls" / "none-bitfit" / "frac1"
    assert result["ssa_method"] is None and "ssa_stage" not in result and "ssa" not in result["times_s"]
    assert not (tmp_path / "runs" / "isic_cls" / "ssa").exists()
    assert result["files"]["sa_start_weights"] == str(weights_file)
    assert result["sa_start_check"]["verified"] and result["sa_start_check"]["tensors_equal"] == len(weights.state_dict())
    assert result["params"]["ssa_trainable_backbone"] is None
    # BitFit trains every bias: qkv, proj, fc1, fc2 (+ their LayerNorms) of each block, patch embed, final norm
    biases = sum(p.numel() for n, p in weights.named_parameters() if n.endswith("bias"))
    assert result["params"]["sa_trainable_backbone"] == biases


def test_ssa_with_vpt_is_refused_before_any_work(tmp_path, demo):
    with pytest.raises(ValueError, match="SSA with VPT exports no merged backbone"):
        run_essa("isic_cls", "vpt", data_dir=str(demo / "isic2018"), output_root=tmp_path, **TINY)
    result = read_result(tmp_path / "isic_cls" / "vpt-vpt" / "frac1")
    assert result["status"] == "failed" and result["failed_stage"] == "setup"
    assert "ssa=False for the VPT baseline" in result["error"]
    assert not (tmp_path / "isic_cls" / "ssa").exists()


def test_the_split_file_is_made_once_and_read_the_same_by_the_pipeline_and_the_bundle(tmp_path, demo):
    from essa_monai.data import read_split
    from essa_monai.pipeline.bundles import parse_config
    from essa_monai.pipeline.plan import make_split_file, plan_run

    settings = ESSASettings(dataset="isic_cls", label_fraction=0.25, data_dir=str(demo / "isic2018"))
    plan = plan_run(settings, tmp_path, split_fractions=[0.5, 1.0])
    split_file = Path(make_split_file(plan))
    assert split_file == tmp_path / "isic_cls" / "splits" / split_file.name and split_file.name.startswith("seed0-")
    content = json.loads(split_file.read_text())
    assert content["meta"]["fractions"] == [1.0, 0.5, 0.25, 0.1, 0.01]  # the grid's and the defaults, drawn together
    assert len(content["training"]) == 28 and len(content["training_25pct"]) == 7

    # the bundle reads the file the pipeline made, as it is: the same 7 images, stratified (every class once)
    mtime = split_file.stat().st_mtime_ns
    train, val = parse_config(plan.spec.train_config, plan.sa_overrides(), "train_datalist", "val_datalist")
    assert [i["id"] for i in train] == [i["id"] for i in read_split(split_file, 0.25)["training"]]
    assert sorted(item["label"] for item in train) == list(range(7))
    assert {i["id"] for i in train} < {i["id"] for i in content["training_50pct"]}  # nested
    assert len(val) == 7  # the official validation split is untouched
    assert make_split_file(plan) == str(split_file) and split_file.stat().st_mtime_ns == mtime

    # a fraction the file lacks is refused with the fix, never redrawn behind the other runs' backs
    other = plan_run(ESSASettings(dataset="isic_cls", label_fraction=0.3, data_dir=str(demo / "isic2018")), tmp_path)
    with pytest.raises(ValueError, match=r"not \[0\.3\].*--overwrite.*--fractions 0.01,0.1,0.25,0.3,0.5,1"):
        make_split_file(other)
    with pytest.raises(ValueError, match="label_fraction must be in"):
        plan_run(ESSASettings(label_fraction=1.5), tmp_path)


def test_run_essa_command_prints_metrics_and_writes_the_result(tmp_path, demo):
    command = [sys.executable, str(ROOT / "scripts" / "run_essa.py"), "run", "--dataset", "isic_seg",
               "--ssa_method", "lora", "--sa_method", "apla", "--data_dir", str(demo / "isic2018"),
               "--output_root", str(tmp_path), "--backbone_kwargs", json.dumps(TINY_VIT), "--img_size", "28",
               "--epochs", "1", "--batch_size", "4", "--ssa_epochs", "1", "--ssa_batch_size", "8",
               "--ssa_overrides", json.dumps(TINY["ssa_overrides"]), "--sa_overrides", '{"decoder_channels": 16}']
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = read_result(tmp_path / "isic_seg" / "lora-apla" / "frac1")
    assert result["status"] == "ok" and result["row"] == "lora>apla" and result["key_metric"] == "thresholded_jaccard"
    assert result["params"]["ssa_trainable_backbone"] == LORA_PARAMS
    assert result["params"]["sa_trainable_backbone"] == APLA_PARAMS
    assert "isic_seg 100% lora>apla: done" in done.stdout
    assert f"validation: thresholded_jaccard {result['key_metric_value']:.4f}" in done.stdout
    assert f"trainable backbone params: SSA {LORA_PARAMS:,}, SA {APLA_PARAMS:,} of " in done.stdout


def test_interrupted_ssa_resumes_from_its_last_epoch_checkpoint(tmp_path, demo, monkeypatch, capsys):
    from essa_monai.ssa import SSATrainer

    original = SSATrainer._iteration
    first_epoch_iterations = []

    def crash_in_epoch_2(self, engine, batch):
        if engine.state.epoch == 2:
            raise RuntimeError("simulated crash in SSA epoch 2")
        first_epoch_iterations.append(engine.state.iteration)
        return original(self, engine, batch)

    monkeypatch.setattr(SSATrainer, "_iteration", crash_in_epoch_2)
    settings = dict(data_dir=str(demo / "isic2018"), output_root=tmp_path, **{**TINY, "ssa_epochs": 2})
    with pytest.raises(RuntimeError):  # MONAI's "Failed to evaluate ..." around the crash
        run_essa("isic_seg", "bitfit", **settings)
    failed = read_result(tmp_path / "isic_seg" / "bitfit-bitfit" / "frac1")
    assert failed["status"] == "failed" and failed["failed_stage"] == "ssa"
    assert failed["error"].startswith("RuntimeError: simulated crash in SSA epoch 2 [raised through RuntimeError: Failed")
    (ssa_folder,) = [p for p in (tmp_path / "isic_seg" / "ssa").iterdir() if not p.name.startswith(".")]
    assert (ssa_folder / "run" / "checkpoints" / "checkpoint_epoch=1.pt").is_file()
    assert not (ssa_folder / "ssa_done.json").exists()

    monkeypatch.setattr(SSATrainer, "_iteration", original)
    capsys.readouterr()
    result = run_essa("isic_seg", "bitfit", **settings)
    assert "SSA: resuming the interrupted run from checkpoint_epoch=1.pt" in capsys.readouterr().out
    assert result["status"] == "ok" and result["ssa_stage"]["folder"] == str(ssa_folder)
    per_epoch = len(first_epoch_iterations)
    assert (result["ssa_stage"]["epochs"], result["ssa_stage"]["iterations"]) == (2, 2 * per_epoch)
    assert result["key_metric"] == "thresholded_jaccard" and 0.0 <= result["key_metric_value"] <= 1.0


def test_a_run_folder_with_other_settings_is_moved_aside_not_overwritten(tmp_path, demo):
    old = tmp_path / "isic_cls" / "apla-apla" / "frac1"
    old.mkdir(parents=True)
    (old / "settings.json").write_text(json.dumps({"epochs": 100}))
    (old / "model.pt").write_text("an earlier model")
    with pytest.raises(RuntimeError):  # MONAI's "Failed to evaluate ..." around the error, in SSA after the take-over
        run_essa("isic_cls", "apla", data_dir=str(demo / "isic2018"), output_root=tmp_path, backbone_name="vit_bogus")
    (moved,) = (tmp_path / "isic_cls" / "apla-apla").glob("frac1.prev-*")
    assert (moved / "model.pt").read_text() == "an earlier model"
    assert json.loads((moved / "settings.json").read_text()) == {"epochs": 100}
    failed = read_result(old)
    assert failed["status"] == "failed" and failed["failed_stage"] == "ssa"
    assert failed["error"].startswith("ValueError: unknown DINOv2 backbone 'vit_bogus'")
    assert json.loads((old / "settings.json").read_text())["backbone_name"] == "vit_bogus"


def test_overrides_the_pipeline_sets_itself_are_refused_before_any_work(tmp_path, demo):
    with pytest.raises(ValueError, match=r"sa_overrides may not set \['model_file'\]"):
        run_essa("isic_cls", "apla", data_dir=str(demo / "isic2018"), output_root=tmp_path,
                 sa_overrides={"model_file": "elsewhere.pt"})
    failed = read_result(tmp_path / "isic_cls" / "apla-apla" / "frac1")
    assert failed["status"] == "failed" and failed["failed_stage"] == "setup"
    assert sorted(p.name for p in (tmp_path / "isic_cls" / "apla-apla" / "frac1").iterdir()) == ["result.json"]


def test_a_bad_argument_never_replaces_a_finished_result(tmp_path):
    finished = tmp_path / "isic_cls" / "lora-lora" / "frac1"
    finished.mkdir(parents=True)
    (finished / "result.json").write_text(json.dumps({"status": "ok", "key_metric_value": 0.75}))
    with pytest.raises(FileNotFoundError, match="data_dir does not exist: .*nowhere"):
        run_essa("isic_cls", "lora", data_dir=str(tmp_path / "nowhere"), output_root=tmp_path)
    assert read_result(finished) == {"status": "ok", "key_metric_value": 0.75}
    attempt = json.loads((finished / "failed_attempt.json").read_text())
    assert attempt["status"] == "failed" and attempt["error"].startswith("FileNotFoundError: data_dir does not exist")


def test_each_dataset_runs_ssa_with_its_own_bundle_config_else_the_shared_one(tmp_path, monkeypatch):
    from essa_monai.pipeline import dataset_spec

    assert dataset_spec("isic_seg").ssa_config == "bundles/isic_apla/configs/ssa.json"
    assert dataset_spec("isic_seg").ssa_config_note is None
    configs = tmp_path / "bundles" / "cxr14_lora" / "configs"
    configs.mkdir(parents=True)
    monkeypatch.setenv("ESSA_MONAI_ROOT", str(tmp_path))  # a checkout whose cxr14 bundle has no ssa.json yet
    assert dataset_spec("cxr14").ssa_config == "bundles/isic_apla/configs/ssa.json"
    assert dataset_spec("cxr14").ssa_config_note.startswith("bundles/cxr14_lora/configs/ssa.json does not exist: SSA on cxr14 runs bundles/isic_apla/configs/ssa.json")
    (configs / "ssa.json").write_text("{}")
    assert dataset_spec("cxr14").ssa_config == "bundles/cxr14_lora/configs/ssa.json"
    assert dataset_spec("cxr14").ssa_config_note is None
