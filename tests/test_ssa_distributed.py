"""Multi-process SSA: 2 processes under torchrun (gloo on CPU) with DDP and FSDP2, against one process.

Each torchrun launch runs several cases (tests/ssa_distributed_worker.py) so the interpreter start-up is
paid once. A tiny ViT, no augmentation (fixed tensors) and fixed seeds make "2 processes x batch 4" and
"1 process x batch 8" the same computation: DINO and iBOT losses are means over the batch and their
gradients are averaged over ranks, the centres and Sinkhorn-Knopp sums are all-reduced. KoLeo is not
compared there (weight 0): as in DINOv2 its nearest neighbours are searched within each rank's batch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import ssa_distributed_worker as worker

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(worker.__file__)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend (CPU multi-process runs)",
)


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` from the repository root (a free port each time)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def assert_same_state(result: dict, reference: dict, rtol: float, atol: float) -> None:
    for part in ("student", "teacher", "objective"):
        assert result[part].keys() == reference[part].keys(), part
        for name, expected in reference[part].items():
            torch.testing.assert_close(result[part][name], expected, rtol=rtol, atol=atol, msg=f"{part} {name}")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_processes")
    run = torchrun(str(WORKER), "equality", str(out))
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return out


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and lose much when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", list(worker.CASES))
def test_two_processes_end_like_one_process_with_twice_the_batch(two_process_results, one_thread, case):
    mode, peft, options = worker.CASES[case]
    reference = worker.run_equality_case(case)  # this process, distributed="none", batch 8
    result = torch.load(two_process_results / f"{case}.pt")  # 2 ranks x batch 4

    assert_same_state(result, reference, rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in result["losses"]] == pytest.approx([r["loss"] for r in reference["losses"]], rel=1e-5)
    with_ibot = options.get("ibot_weight", 1.0) > 0
    if with_ibot:  # iBOT ran, although rank 1 had no masked patch in step 0
        assert reference["losses"][0]["ibot_loss"] > 0
    # not trivially equal: training moved the student and the teacher, and the centres left zero
    initial = worker.make_student(peft, **{k: v for k, v in options.items() if k in worker.NETWORK_OPTIONS}).state_dict()
    assert max((reference["student"][n] - initial[n]).abs().max().item() for n in reference["teacher"]) > 1e-3
    assert max((reference["teacher"][n] - initial[n]).abs().max().item() for n in reference["teacher"]) > 1e-5
    if options.get("centering", "centering") == "centering":
        centred = ("dino_loss", "ibot_loss") if with_ibot else ("dino_loss",)
        assert min(reference["objective"][f"{loss}.center"].abs().max() for loss in centred) > 1e-3
    # the teacher reads the student's frozen tensors (the backbone's with PEFT, the heads' magnitudes in
    # every case), under FSDP the very same shards; FSDP ranks hold about half of every tensor
    assert result["frozen_shared"] and reference["frozen_shared"] and reference["local_fraction"] == 1.0
    assert result["local_fraction"] == (1.0 if mode == "ddp" else pytest.approx(0.5, abs=0.01))
    if mode == "ddp":  # DDP replicas: rank 1 holds the very same tensors as rank 0
        replica = torch.load(two_process_results / f"{case}.rank1.pt")
        for part in ("student", "teacher", "objective"):
            assert all(torch.equal(replica[part][n], result[part][n]) for n in result[part]), part


def test_killed_two_process_run_resumes_like_the_uninterrupted_run(tmp_path):
    killed = torchrun(str(WORKER), "killed", str(tmp_path))
    log = killed.stdout + killed.stderr
    assert killed.returncode != 0 and "SIGKILL" in log, log[-4000:]  # the FSDP run died mid-training
    for case in worker.RESUME_CASES:
        assert [p.name for p in (tmp_path / f"{case}.checkpoints").iterdir()] == ["checkpoint_epoch=1.pt"]

    resumed = torchrun(str(WORKER), "resume", str(tmp_path))
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    exports = {}
    for case in worker.RESUME_CASES:
        uninterrupted = torch.load(tmp_path / f"{case}.uninterrupted.pt")
        again = torch.load(tmp_path / f"{case}.resumed.pt")
        assert uninterrupted["iterations"] == again["iterations"] == 4
        assert again["losses"] == pytest.approx(uninterrupted["losses"][2:], rel=1e-6)
        assert_same_state(again, uninterrupted, rtol=1e-6, atol=1e-7)
        assert uninterrupted["knn_accuracy"] is not None and again["knn_accuracy"] == uninterrupted["knn_accuracy"]
        exports[case] = {
            stage: torch.load(tmp_path / f"{case}.{stage}.export" / "backbone_merged.pth")
            for stage in ("uninterrupted", "resumed")
        }
        for name, value in exports[case]["uninterrupted"].items():
            torch.testing.assert_close(exports[case]["resumed"][name], value, rtol=1e-6, atol=1e-7)
    # the export (and the kNN monitor) gathered from FSDP shards see the replicated DDP teacher
    assert torch.load(tmp_path / "fsdp-apla.uninterrupted.pt")["knn_accuracy"] == torch.load(
        tmp_path / "ddp-apla.uninterrupted.pt")["knn_accuracy"]
    for name, value in exports["ddp-apla"]["uninterrupted"].items():
        torch.testing.assert_close(exports["fsdp-apla"]["uninterrupted"][name], value, rtol=1e-5, atol=1e-6)
    # an FSDP checkpoint is a plain one: same keys and optimizer layout as the DDP run's
    ddp, fsdp = (torch.load(tmp_path / f"{c}.checkpoints" / "checkpoint_epoch=1.pt", weights_only=False) for c in worker.RESUME_CASES)
    assert ddp["student"].keys() == fsdp["student"].keys()
    assert ddp["optimizer"]["state"].keys() == fsdp["optimizer"]["state"].keys()
    for index, state in ddp["optimizer"]["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(fsdp["optimizer"]["state"][index][key], value, rtol=1e-5, atol=1e-7)


def test_ssa_bundle_under_torchrun_writes_logs_checkpoints_and_export_once(tmp_path):
    """The documented command with the multi_gpu_ssa.json overlay (DDP): every output comes from rank 0."""
    from essa_monai.data.demo import make_demo_data

    make_demo_data(tmp_path / "demo", parts=("isic2018",))
    out = tmp_path / "run"
    overrides = {
        "data_dir": str(tmp_path / "demo" / "isic2018"), "output_dir": str(out), "export_dir": str(out / "export"),
        "backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "global_crops_size": 28,
        "local_crops_size": 14, "local_crops_number": 2, "n_prototypes": 32, "head_hidden_dim": 32,
        "head_bottleneck_dim": 16, "batch_size": 2, "knn_k": 3, "cache_rate": 0.0, "epochs": 1,
        "peft": {"method": "apla", "r": 8},
    }
    configs = "['bundles/isic_apla/configs/ssa.json','bundles/isic_apla/configs/multi_gpu_ssa.json']"
    args = [f"--{k}={v!r}" if isinstance(v, (dict, list)) else f"--{k}={v}" for k, v in overrides.items()]
    run = torchrun("-m", "monai.bundle", "run", "--config_file", configs, *args)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]

    n_images = len(list((tmp_path / "demo" / "isic2018" / "ISIC2018_Task1-2_Training_Input").iterdir()))
    iterations = n_images // 2 // 2  # over 2 ranks, batch 2 per rank, incomplete batches dropped
    assert len(re.findall(rf"Epoch: 1/1, Iter: \d+/{iterations} --", log)) == iterations  # StatsHandler: rank 0 only
    assert log.count("kNN (k=3) accuracy") == 1
    assert log.count("Saved checkpoint at epoch: 1") == 1 and log.count("Engine run finished") == 1
    assert log.count("exported adapted backbone") == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_epoch=1.pt", "ssa_final.pt"]
    assert sorted(p.name for p in (out / "export").iterdir()) == ["adapter.pt", "backbone_merged.pth", "export.json"]
    assert len(list((out / "tensorboard").iterdir())) == 1  # one events file: one writer
    assert json.loads((out / "export" / "export.json").read_text())["peft"]["r"] == 8
    checkpoint = torch.load(out / "checkpoints" / "ssa_final.pt", weights_only=False)
    assert checkpoint["trainer"]["iteration"] == iterations


def test_distributed_settings_are_checked_before_any_work(monkeypatch):
    from essa_monai.ssa import DINOv2Objective, SSATrainer, init_distributed, ssa_parameter_groups

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2 processes but distributed is 'none'.*multi_gpu_ssa.json"):
        init_distributed("none")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="distributed must be one of 'none', 'ddp', 'fsdp', got 'deepspeed'"):
        init_distributed("deepspeed")
    with pytest.raises(RuntimeError, match="needs torchrun's environment \\(RANK"):
        init_distributed("ddp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        student = worker.make_student("apla")
    optimizer = torch.optim.AdamW(ssa_parameter_groups(student))
    with pytest.raises(RuntimeError, match="distributed='fsdp' needs a process group: launch with torchrun"):
        SSATrainer("cpu", 1, [], student, DINOv2Objective(worker.K), optimizer, distributed="fsdp")
