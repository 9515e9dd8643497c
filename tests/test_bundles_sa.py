"""Every SA bundle: train, evaluate and inference end to end on demo data (tiny ViT), as model-zoo's CI runs
bundles with ConfigWorkflow, plus MONAI's own bundle tools (verify_metadata, verify_net_in_out, ckpt_export)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from PIL import Image

from essa_monai.data.demo import make_demo_data

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ["isic_apla", "isic_cls_apla", "cxr14_lora"]
TINY = {"backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "img_size": 28, "batch_size": 4,
        "epochs": 2, "cache_rate": 0.0}
DATA_PART = {"isic_apla": "isic2018", "isic_cls_apla": "isic2018", "cxr14_lora": "chestxray14"}
KEY_METRIC = {"isic_apla": "val_thresholded_jaccard", "isic_cls_apla": "val_balanced_accuracy",
              "cxr14_lora": "val_mean_auroc"}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo_data(root, parts=("isic2018", "chestxray14"))
    return root


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs' % macros name bundles/common/... relative to the repo root


def config(bundle: str, *overlays: str) -> list[str]:
    return [f"bundles/{bundle}/configs/train.json", *(f"bundles/{bundle}/configs/{o}.json" for o in overlays)]


def overrides(bundle: str, demo_root: Path, out: Path, **extra) -> dict:
    tiny = dict(TINY, decoder_channels=16) if bundle == "isic_apla" else dict(TINY)
    return {**tiny, "data_dir": str(demo_root / DATA_PART[bundle]), "output_dir": str(out / "run"),
            "model_file": str(out / "models" / "model.pt"), "adapter_file": str(out / "models" / "adapter.pt"),
            "split_file": str(out / "split.json"), **extra}


def run_workflow(config_file: list[str], ids: tuple[str, ...] = (), **kwargs) -> list:
    workflow = ConfigWorkflow(config_file=config_file, workflow_type=None, logging_file=False, **kwargs)
    workflow.initialize()
    workflow.run()
    objects = [workflow.parser.get_parsed_content(i) for i in ids]
    workflow.finalize()
    return objects


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_trains_evaluates_and_infers_on_demo_data(bundle, demo_root, tmp_path):
    args = overrides(bundle, demo_root, tmp_path)
    trainer, validator = run_workflow(config(bundle), ("train#trainer", "validate#evaluator"), **args)
    assert trainer.state.epoch == 2
    best = validator.state.best_metric
    assert validator.state.key_metric_name == KEY_METRIC[bundle]

    model_file = tmp_path / "models" / "model.pt"
    info = json.loads(model_file.with_suffix(".json").read_text())
    assert info["peft"]["method"] == ("lora" if bundle == "cxr14_lora" else "apla") and len(info["adapter_hash"]) == 12
    merged = torch.load(model_file, weights_only=True)
    assert not any("lora_" in k or "trainable_weight" in k for k in merged)  # PEFT folded into plain layers
    assert (tmp_path / "models" / "adapter.pt").is_file()

    # evaluation of the exported (merged, best) model reproduces the best validation score of training
    (evaluator,) = run_workflow(config(bundle, "evaluate"), ("validate#evaluator",), **overrides(
        bundle, demo_root, tmp_path, output_dir=str(tmp_path / "eval")))
    score = evaluator.state.metrics[KEY_METRIC[bundle]]
    assert score == pytest.approx(best, abs=1e-6) or (np.isnan(score) and np.isnan(best))

    infer_out = tmp_path / "inference"
    run_workflow(config(bundle, "inference"), **overrides(bundle, demo_root, tmp_path, output_dir=str(infer_out)))
    if bundle == "isic_apla":
        inputs = sorted((demo_root / "isic2018" / "ISIC2018_Task1-2_Test_Input").glob("*.jpg"))
        for image in inputs:
            mask = np.array(Image.open(infer_out / f"{image.stem}_segmentation.png"))
            assert mask.shape == np.array(Image.open(image)).shape[:2]  # the image's own size, not transposed
            assert set(np.unique(mask)) <= {0, 255}
    else:
        with open(infer_out / "predictions.csv") as f:
            rows = list(csv.reader(f))
        n_classes = 7 if bundle == "isic_cls_apla" else 14
        assert rows and all(len(r) == 1 + n_classes for r in rows)
        probs = np.array([[float(v) for v in r[1:]] for r in rows])
        assert ((probs >= 0) & (probs <= 1)).all()
        if bundle == "isic_cls_apla":
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # softmax over 7 classes


def test_cxr14_label_fraction_is_read_from_a_split_file_made_once(demo_root, tmp_path):
    args = overrides("cxr14_lora", demo_root, tmp_path, epochs=1, label_fraction=0.1)
    (train_list,) = run_workflow(config("cxr14_lora"), ("train_datalist",), **args)
    split_file = tmp_path / "split.json"
    split = json.loads(split_file.read_text())
    full = split["training"]
    assert {i["id"] for i in train_list} <= {i["id"] for i in full}
    assert all(Path(i["image"]).is_file() for i in train_list)  # stored relative, read under data_dir
    # patients are never split: the subset holds whole patients (2 images each in the demo), about 10 %
    patients = {i["patient_id"] for i in train_list}
    assert {i["id"] for i in full if i["patient_id"] in patients} == {i["id"] for i in train_list}
    assert 1 <= len(train_list) <= round(0.1 * len(full)) + 1
    mtime = split_file.stat().st_mtime_ns
    (again,) = run_workflow(config("cxr14_lora"), ("train_datalist",), **args)
    assert [i["image"] for i in again] == [i["image"] for i in train_list]
    assert split_file.stat().st_mtime_ns == mtime  # read, not written again


@pytest.mark.parametrize("bundle", BUNDLES)
def test_monai_bundle_tools_pass(bundle, demo_root, tmp_path):
    meta = f"bundles/{bundle}/configs/metadata.json"
    verify_metadata(meta_file=meta, filepath="bundles/common/meta_schema.json")
    tiny = {**TINY, "random_init_warning": False}
    if bundle == "isic_apla":
        tiny["decoder_channels"] = 16
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config(bundle), n=2, **tiny)

    # export a (merged) checkpoint to TorchScript and compare with the eager network
    parser = ConfigParser()
    parser.read_config(config(bundle))
    parser.update(tiny)
    net = parser.get_parsed_content("network_def").eval()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    ts_file = tmp_path / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt_export(net_id="network_def", filepath=str(ts_file), ckpt_file=str(ckpt), meta_file=meta,
                    config_file=config(bundle), use_trace=True, input_shape=[1, 3, 28, 28], **tiny)
        scripted = torch.jit.load(str(ts_file))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert (scripted(x) - net(x)).abs().max().item() < 1e-5


def test_broken_metadata_is_rejected_by_the_local_schema(tmp_path):
    meta = json.loads((ROOT / "bundles/isic_apla/configs/metadata.json").read_text())
    del meta["network_data_format"]["outputs"]["pred"]["num_channels"]
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="num_channels"):
        verify_metadata(meta_file=str(path), filepath=str(ROOT / "bundles/common/meta_schema.json"))


def test_two_process_gloo_training_matches_one_process(demo_root, tmp_path):
    """torchrun --nproc_per_node=2 with multi_gpu_train.json (gloo on CPU), batch 2 per process, against one
    process with batch 4: without shuffling or augmentation every global batch holds the same 4 images and
    DDP averages the gradients, so both runs should end with the same model and metric."""
    import re
    import subprocess
    import sys

    from essa_monai.sa import load_merged_model

    common = {"train_transforms": "@val_transforms", "epochs": 2}
    single = overrides("isic_cls_apla", demo_root, tmp_path / "one", **common,
                       train_sampler="$torch.utils.data.SequentialSampler(@train#dataset)")
    (validator,) = run_workflow(config("isic_cls_apla"), ("validate#evaluator",), **single)
    single_score = validator.state.metrics["val_auroc"]

    multi = overrides("isic_cls_apla", demo_root, tmp_path / "two", **common, batch_size=2, shuffle_train=False)
    args = [f"--{k}={v!r}" if isinstance(v, (dict, list, bool)) else f"--{k}={v}" for k, v in multi.items()]  # fire reads literals
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "monai.bundle",
         "run", "--config_file", json.dumps(config("isic_cls_apla", "multi_gpu_train")).replace('"', "'"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    scores = [float(s) for s in re.findall(r"Epoch\[2\] Metrics -- .*?val_auroc: ([0-9.]+)", log)]
    assert len(scores) == 2 and scores[0] == scores[1]  # both ranks validate on the whole set
    assert scores[0] == pytest.approx(single_score, abs=1e-3)

    x = torch.randn(3, 3, 28, 28)
    nets = []
    for run in ("one", "two"):
        parser = ConfigParser()
        parser.read_config(config("isic_cls_apla"))
        parser.update({**TINY, "random_init_warning": False})
        nets.append(load_merged_model(parser.get_parsed_content("network_def"), tmp_path / run / "models" / "model.pt"))
    with torch.no_grad():
        assert (nets[0](x) - nets[1](x)).abs().max().item() < 1e-4


def test_early_stopping_and_resume(demo_root, tmp_path):
    # the demo's thresholded Jaccard stays 0 with random weights: no improvement, so patience 1 stops at epoch 2
    args = overrides("isic_apla", demo_root, tmp_path, epochs=4, early_stop_patience=1)
    (trainer,) = run_workflow(config("isic_apla"), ("train#trainer",), **args)
    assert trainer.state.epoch == 2

    # resume: 1 epoch, then continue to 2 from the last checkpoint (iterations continue, not restart)
    args = overrides("isic_cls_apla", demo_root, tmp_path / "resume", epochs=1)
    (first,) = run_workflow(config("isic_cls_apla"), ("train#trainer",), **args)
    (checkpoint,) = (tmp_path / "resume" / "run" / "checkpoints").glob("last_checkpoint_epoch=1*.pt")
    (resumed,) = run_workflow(config("isic_cls_apla"), ("train#trainer",), **{**args, "epochs": 2, "resume_from": str(checkpoint)})
    assert resumed.state.epoch == 2 and resumed.state.iteration == 2 * first.state.iteration
