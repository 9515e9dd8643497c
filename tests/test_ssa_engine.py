"""SSA engine on a tiny ViT: shared frozen tensors, EMA, schedules, resume, export, every PEFT method."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointLoader, CheckpointSaver

from essa_monai.backbone import create_backbone
from essa_monai.peft import load_adapter, trainable_parameters
from essa_monai.ssa import (
    BatchSeedHandler,
    DINOv2Objective,
    SSAExportHandler,
    SSANetwork,
    SSAScheduleHandler,
    SSATrainer,
    TeacherEMAState,
    knn_predict,
    make_teacher,
    ssa_parameter_groups,
)
from essa_monai.ssl import MultiCropCollator, MultiCropd

K = 32  # prototypes
TINY = dict(img_size=28, embed_dim=32, depth=2, num_heads=2)


def tiny_backbone(seed: int = 0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return create_backbone("vit_small_patch14_dinov2", **TINY)


def make_loader(n_images: int = 8, batch_size: int = 4) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    images = [{"image": torch.rand(1, 40, 36, generator=generator)} for _ in range(n_images)]  # grayscale
    transform = MultiCropd(keys="image", global_crops_size=28, local_crops_size=14, local_crops_number=2)
    return DataLoader(Dataset(images, transform), batch_size=batch_size, collate_fn=MultiCropCollator(), num_workers=0, generator=torch.Generator())


def make_trainer(peft, max_epochs=1, handlers=(), init_seed=0, data_seed=0, **trainer_kwargs) -> SSATrainer:
    student = SSANetwork(tiny_backbone(init_seed), n_prototypes=K, hidden_dim=48, bottleneck_dim=16, peft=peft)
    optimizer = torch.optim.AdamW(ssa_parameter_groups(student), lr=1e-3)
    return SSATrainer(
        "cpu", max_epochs, make_loader(), student, DINOv2Objective(K), optimizer,
        train_handlers=[BatchSeedHandler(data_seed), *handlers], **trainer_kwargs,
    )


def test_apla_ssa_keeps_frozen_tensors_bit_identical_and_shared_and_moves_trainables():
    trainer = make_trainer({"method": "apla", "r": 8}, max_epochs=2, freeze_last_layer_epochs=0)
    student, teacher = trainer.student, trainer.teacher
    before = {k: v.clone() for k, v in student.state_dict().items()}
    frozen = [n for n, p in student.named_parameters() if not p.requires_grad]  # backbone + head's fixed g
    trained = [n for n, p in student.named_parameters() if p.requires_grad]
    trainer.run()

    assert trainer.state.iteration == 4
    after_student, after_teacher = student.state_dict(), teacher.state_dict()
    assert any(n.startswith("backbone.blocks.0.attn.qkv") for n in frozen)
    for key in frozen:  # bit-identical, one storage for student and teacher
        assert torch.equal(after_student[key], before[key]), key
        assert after_teacher[key].data_ptr() == after_student[key].data_ptr(), key
    student_params = dict(student.named_parameters())
    shared = {n for n, t in teacher.named_parameters() if t.data_ptr() == student_params[n].data_ptr()}
    assert shared == set(frozen)
    moved = [n for n in trained if not torch.equal(after_student[n], before[n])]
    assert "backbone.blocks.0.attn.proj.trainable_weight" in moved and "dino_head.mlp.0.weight" in moved
    # the teacher owns separate storage for every trained tensor
    assert all(after_teacher[n].data_ptr() != after_student[n].data_ptr() for n in trained)


def test_teacher_ema_follows_the_formula():
    trainer = make_trainer({"method": "lora"}, freeze_last_layer_epochs=0)
    trainer.state.teacher_momentum = 0.9  # no schedule handler: constant momentum
    teacher_params = dict(trainer.teacher.named_parameters())
    snapshots = {}

    @trainer.on(Events.ITERATION_STARTED)
    def snapshot(engine):
        snapshots["teacher"] = {n: teacher_params[n].detach().clone() for n in trainable_parameters(engine.student)}

    @trainer.on(Events.ITERATION_COMPLETED)
    def check(engine):
        for name, student_param in trainable_parameters(engine.student).items():
            expected = 0.9 * snapshots["teacher"][name] + 0.1 * student_param.detach()
            torch.testing.assert_close(teacher_params[name], expected, rtol=0, atol=1e-6)
        snapshots["checked"] = snapshots.get("checked", 0) + 1

    trainer.run()
    assert snapshots["checked"] == 2


def test_schedule_handler_drives_lr_weight_decay_momentum_and_teacher_temp():
    seen = []
    schedule = SSAScheduleHandler(lr=1e-3, min_lr=1e-5, warmup_epochs=1, weight_decay=0.04, weight_decay_end=0.2,
                                  momentum_teacher=0.99, warmup_teacher_temp=0.04, teacher_temp=0.07,
                                  warmup_teacher_temp_epochs=1)
    trainer = make_trainer("bitfit", max_epochs=3, handlers=[schedule])

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        groups = engine.optimizer.param_groups
        seen.append((groups[0]["lr"], groups[0]["weight_decay"], groups[-1]["weight_decay"],
                     engine.state.teacher_momentum, engine.state.teacher_temp))

    trainer.run()
    lr, wd, wd_no_decay, momentum, temp = zip(*seen)
    assert len(seen) == 6  # 3 epochs x 2 iterations
    assert lr[0] == 0.0 and lr[1] == pytest.approx(1e-3) and lr[-1] < lr[2] and lr[-1] >= 1e-5
    assert wd[0] == pytest.approx(0.04) and wd[-1] > wd[2] > wd[0] and set(wd_no_decay) == {0.0}
    assert momentum[0] == pytest.approx(0.99) and momentum[-1] > momentum[2] > momentum[0]
    assert temp[0] == pytest.approx(0.04) and temp[1] == pytest.approx(0.07) and temp[-1] == pytest.approx(0.07)


def run_losses(trainer) -> list[float]:
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"]))
    trainer.run()
    return losses


def checkpoint_dict(trainer: SSATrainer) -> dict:
    """Everything SSA needs to resume: student, teacher EMA tensors, centres, optimizer, engine state."""
    return {
        "student": trainer.student, "teacher": TeacherEMAState(trainer.teacher, trainer.student),
        "objective": trainer.objective, "optimizer": trainer.optimizer, "trainer": trainer,
    }


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    peft = {"method": "apla", "r": 8}
    uninterrupted = run_losses(make_trainer(peft, max_epochs=2, handlers=[SSAScheduleHandler(lr=1e-3)]))

    # the same 2-epoch run, stopped after its first epoch (as a crash or a time limit would)
    first = make_trainer(peft, max_epochs=2, handlers=[SSAScheduleHandler(lr=1e-3)])
    CheckpointSaver(str(tmp_path), checkpoint_dict(first), save_interval=1, epoch_level=True).attach(first)
    first.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    assert run_losses(first) == uninterrupted[:2]
    (checkpoint,) = tmp_path.glob("*epoch=1*.pt")

    # a new process rebuilds everything from scratch, with other initial weights, then loads the checkpoint
    resumed = make_trainer(peft, max_epochs=2, handlers=[SSAScheduleHandler(lr=1e-3)], init_seed=123)
    CheckpointLoader(str(checkpoint), checkpoint_dict(resumed), map_location="cpu").attach(resumed)
    assert run_losses(resumed) == pytest.approx(uninterrupted[2:], rel=1e-6)


@pytest.mark.parametrize("peft", ["full", {"method": "apla"}, {"method": "lora", "r": 2}, "bitfit",
                                  {"method": "vpt", "num_tokens": 2, "deep": True}])
def test_every_method_trains_and_exports_a_backbone_for_supervised_adaptation(tmp_path, peft):
    trainer = make_trainer(peft, handlers=[SSAExportHandler(tmp_path / "export")], freeze_last_layer_epochs=0)
    trainer.run()
    assert all(torch.isfinite(torch.tensor(v)) for v in trainer.state.output.values())
    teacher = trainer.teacher.backbone.eval()
    x = torch.randn(2, 3, 42, 28)
    with torch.no_grad():
        expected = teacher(x)
        adapted = load_adapter(tiny_backbone(), tmp_path / "export" / "adapter.pt").eval()
        assert (adapted(x) - expected).abs().max().item() < 1e-5
        merged_file = tmp_path / "export" / "backbone_merged.pth"
        if peft != {"method": "vpt", "num_tokens": 2, "deep": True}:
            merged = create_backbone("vit_small_patch14_dinov2", weights=merged_file, **TINY).eval()
            assert (merged(x) - expected).abs().max().item() < 1e-5
        else:
            assert not merged_file.exists()


def test_teacher_shares_the_backbone_so_peft_ssa_holds_one_copy():
    trainer = make_trainer({"method": "apla", "r": 8})
    storages = lambda m: {p.untyped_storage().data_ptr() for p in m.parameters()}
    backbone_elements = sum(p.numel() for p in trainer.student.backbone.parameters())
    teacher_own = [p for p in trainer.teacher.parameters() if p.untyped_storage().data_ptr() not in storages(trainer.student)]
    own_backbone = sum(p.numel() for p in trainer.teacher.backbone.parameters()
                       if p.untyped_storage().data_ptr() not in storages(trainer.student.backbone))
    assert own_backbone == 2 * 8 * (32 + 1)  # only APLA's trainable rows (2 blocks x 8 rows x (32 + bias))
    assert own_backbone < 0.05 * backbone_elements and teacher_own


def test_knn_predict_votes_by_similarity():
    train = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    queries = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.1, 1.0]]), dim=1)
    scores = knn_predict(train, labels, queries, n_classes=2, k=2, temperature=0.1)
    assert scores.argmax(dim=1).tolist() == [0, 1]
    # query 2's neighbours: train 2 (cos ~0.995, class 1) and train 1 (class 0)
    sims = queries[1] @ train.T
    expected_class1 = torch.exp(sims[2] / 0.1)
    assert scores[1, 1].item() == pytest.approx(expected_class1.item(), rel=1e-5)


def test_fp16_on_cpu_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="use precision='bf16' on CPU"):
        make_trainer("bitfit", precision="fp16")


def test_bf16_autocast_step_runs_on_cpu():
    trainer = make_trainer({"method": "apla"}, precision="bf16")
    trainer.run()
    assert trainer.state.iteration == 2 and math.isfinite(trainer.state.output["loss"])
    assert all(p.dtype == torch.float32 for p in trainer.student.parameters())


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    batch = next(iter(make_loader()))
    results = []
    for checkpointing in (False, True):
        student = SSANetwork(tiny_backbone(), n_prototypes=K, hidden_dim=48, bottleneck_dim=16,
                             peft={"method": "apla", "r": 8}, grad_checkpointing=checkpointing).train()
        torch.manual_seed(3)
        losses = DINOv2Objective(K)(student, make_teacher(student), batch, teacher_temp=0.05)
        losses["loss"].backward()
        results.append((losses["loss"].detach(), {n: p.grad.clone() for n, p in trainable_parameters(student).items()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert student.backbone.grad_checkpointing
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6)
