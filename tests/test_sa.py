"""Supervised-adaptation building blocks: optimizer groups, gradient clipping, merged export and loading."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from essa_monai.heads import ViTClassifier
from essa_monai.peft import apply_peft, trainable_parameters
from essa_monai.sa import GradientClipHandler, MergedModelExportHandler, load_merged_model, peft_network, sa_parameter_groups


def classifier(tiny_backbone, peft=None):
    net = ViTClassifier(tiny_backbone(), num_classes=3)
    return peft_network(net, peft) if peft is not None else net


def test_parameter_groups_give_adapter_and_head_their_own_rates(tiny_backbone):
    net = classifier(tiny_backbone, {"method": "apla", "r": 4})
    groups = {g["name"]: g for g in sa_parameter_groups(net, lr=1e-4, head_lr=1e-3, weight_decay=0.05)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["backbone"]["lr"] == 1e-4 and groups["head"]["lr"] == 1e-3
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.05
    grouped = {id(p) for g in groups.values() for p in g["params"]}
    assert grouped == {id(p) for p in trainable_parameters(net).values()}
    assert all(p.ndim == 2 for p in groups["backbone"]["params"])  # APLA weight rows; biases have no decay


def test_frozen_backbone_without_trainable_head_is_refused(tiny_backbone):
    net = classifier(tiny_backbone, "frozen")
    net.head.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        sa_parameter_groups(net, lr=1e-3)


def test_gradient_clip_handler_bounds_the_global_norm():
    model = nn.Linear(4, 2)
    engine = Engine(lambda e, b: None)
    engine.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(8, 4) * 100).sum().backward()
    GradientClipHandler(max_norm=0.5)(engine)
    total = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert engine.state.grad_norm > 0.5 and total.item() == pytest.approx(0.5, rel=1e-4)


def _one_clipped_step(amp: bool, accumulation_steps: int = 1, iterations: int = 1):
    """A SupervisedTrainer run on a fixed linear model; with ``amp`` its GradScaler is a real CPU one
    with loss scale 1024 (MONAI builds a CUDA scaler, which is disabled on CPU)."""
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    data = [{"image": torch.randn(4, 6) * 10, "label": torch.randn(4, 3)} for _ in range(iterations)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_function=nn.MSELoss(), amp=amp,
        accumulation_steps=accumulation_steps,
        train_handlers=[GradientClipHandler(max_norm=1.0)],
    )
    norms = []
    if amp:
        trainer.add_event_handler(Events.STARTED, lambda e: setattr(e, "scaler", torch.amp.GradScaler("cpu", init_scale=1024.0)))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: norms.append(getattr(e.state, "grad_norm", None)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast("cuda") and torch.cuda.amp.GradScaler on a CPU-only machine
        trainer.run()
    return model, norms, trainer


def test_gradient_clipping_under_amp_sees_unscaled_gradients():
    plain, plain_norms, _ = _one_clipped_step(amp=False)
    scaled, amp_norms, trainer = _one_clipped_step(amp=True)
    assert trainer.scaler.get_scale() == 1024.0  # the step was taken (no overflow), the scale was real
    assert plain_norms[0] > 1.0  # the clip was active
    # the norm the handler measured is the loss's own, not 1024 times it, and the step is the same
    assert amp_norms[0] == pytest.approx(plain_norms[0], rel=1e-5)
    torch.testing.assert_close(scaled.weight, plain.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scaled.bias, plain.bias, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_with_accumulation_clips_only_before_a_step():
    _, norms, _ = _one_clipped_step(amp=False, accumulation_steps=2, iterations=4)
    assert norms[0] is None  # iteration 1 only accumulates: nothing clipped yet
    assert norms[2] == norms[1] != norms[3]  # measured at the stepping iterations 2 and 4, not at 3


@pytest.mark.parametrize("peft", [{"method": "lora", "targets": ["qkv", "proj"]}, {"method": "vpt", "num_tokens": 2}])
def test_merged_export_loads_into_the_plain_network_with_equal_outputs(tiny_backbone, tmp_path, peft):
    net = classifier(tiny_backbone, peft)
    with torch.no_grad():
        for p in trainable_parameters(net).values():
            p.add_(torch.randn_like(p) * 0.05)
    engine = Engine(lambda e, b: None)
    MergedModelExportHandler(net, tmp_path / "model.pt", adapter_file=tmp_path / "adapter.pt")(engine)
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["peft"]["method"] == peft["method"] and (tmp_path / "adapter.pt").is_file()

    plain = load_merged_model(classifier(tiny_backbone), tmp_path / "model.pt")
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        assert (plain(x) - net.eval()(x)).abs().max().item() < 1e-5
    if peft["method"] == "lora":
        assert not any("lora_" in name for name in plain.state_dict())


def test_loading_a_missing_or_foreign_model_names_the_file(tiny_backbone, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_merged_model(classifier(tiny_backbone), tmp_path / "missing.pt")
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: does not fit the network"):
        load_merged_model(classifier(tiny_backbone), tmp_path / "other.pt")


@pytest.mark.parametrize("peft", [{"method": "apla", "r": 4}, {"method": "lora", "r": 2}])
def test_init_model_file_continues_from_a_merged_model(tiny_backbone, tmp_path, peft):
    trained = classifier(tiny_backbone, peft)
    with torch.no_grad():
        for p in trainable_parameters(trained).values():
            p.add_(torch.randn_like(p) * 0.05)
    MergedModelExportHandler(trained, tmp_path / "model.pt")(Engine(lambda e, b: None))

    fresh = classifier(tiny_backbone, peft)  # same architecture, the backbone's original weights
    continued = peft_network(classifier(tiny_backbone), peft, init_model_file=tmp_path / "model.pt")
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert (continued.eval()(x) - trained.eval()(x)).abs().max().item() < 1e-5
        assert (fresh.eval()(x) - trained(x)).abs().max().item() > 1e-3
    assert set(trainable_parameters(continued)) == set(trainable_parameters(fresh))


def test_init_model_file_refuses_a_vpt_model(tiny_backbone, tmp_path):
    vpt = {"method": "vpt", "num_tokens": 2}
    MergedModelExportHandler(classifier(tiny_backbone, vpt), tmp_path / "model.pt")(Engine(lambda e, b: None))
    with pytest.raises(ValueError, match="vpt model cannot be continued"):
        peft_network(classifier(tiny_backbone), vpt, init_model_file=tmp_path / "model.pt")
