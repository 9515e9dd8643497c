"""DINO head shapes and last-layer freezing; EMA teacher update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from essa_monai.ssl import DINOHead, cancel_last_layer_gradients, ema_parameter_pairs, ema_update_


def test_dino_head_maps_features_to_prototype_logits_of_unit_prototypes():
    torch.manual_seed(0)
    head = DINOHead(in_dim=16, out_dim=10, hidden_dim=32, bottleneck_dim=8)
    out = head(torch.randn(5, 16))
    assert out.shape == (5, 10)
    # g = 1 and the bottleneck is L2-normalised, so logits are cosine similarities
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))
    assert out.abs().max() <= 1.0 + 1e-6
    # tokens (B, N, D) work too
    assert head(torch.randn(2, 3, 16)).shape == (2, 3, 10)


def test_dino_head_defaults_follow_dinov2():
    head = DINOHead(in_dim=384)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(384, 2048), (2048, 2048), (2048, 256)]
    assert sum(isinstance(m, nn.GELU) for m in head.mlp) == 2
    magnitude = head.last_layer.parametrizations.weight.original0
    direction = head.last_layer.parametrizations.weight.original1
    assert direction.shape == (65536, 256)
    assert magnitude.shape == (65536, 1) and not magnitude.requires_grad
    assert torch.all(magnitude == 1.0)


def test_dino_head_magnitude_can_be_trained():
    head = DINOHead(in_dim=4, out_dim=3, hidden_dim=8, bottleneck_dim=4, freeze_magnitude=False)
    assert head.last_layer.parametrizations.weight.original0.requires_grad


def test_cancel_last_layer_gradients_freezes_last_layer_only_during_freeze_iters():
    torch.manual_seed(0)
    head = DINOHead(in_dim=6, out_dim=5, hidden_dim=8, bottleneck_dim=4)
    optimizer = torch.optim.AdamW(head.parameters(), lr=0.1, weight_decay=0.5)
    last_before = head.last_layer.parametrizations.weight.original1.detach().clone()
    mlp_before = head.mlp[0].weight.detach().clone()

    head(torch.randn(7, 6)).logsumexp(-1).sum().backward()
    assert cancel_last_layer_gradients(head, iteration=0, freeze_last_layer_iters=2) is True
    assert all(p.grad is None for p in head.last_layer.parameters())
    assert head.mlp[0].weight.grad.abs().sum() > 0
    optimizer.step()
    # frozen: neither the update nor the weight decay touched the last layer; the MLP moved
    torch.testing.assert_close(head.last_layer.parametrizations.weight.original1, last_before, rtol=0, atol=0)
    assert not torch.equal(head.mlp[0].weight, mlp_before)

    optimizer.zero_grad()
    head(torch.randn(7, 6)).logsumexp(-1).sum().backward()
    assert cancel_last_layer_gradients(head, iteration=2, freeze_last_layer_iters=2) is False
    assert head.last_layer.parametrizations.weight.original1.grad.abs().sum() > 0


def test_ema_update_blends_teacher_towards_student():
    teacher = [torch.tensor([1.0, 2.0]), torch.tensor([[0.0], [10.0]])]
    student = [torch.tensor([3.0, 4.0]), torch.tensor([[1.0], [0.0]])]
    ema_update_(zip(teacher, student), momentum=0.9)
    # t = 0.9 t + 0.1 s
    torch.testing.assert_close(teacher[0], torch.tensor([1.2, 2.2]))
    torch.testing.assert_close(teacher[1], torch.tensor([[0.1], [9.0]]))
    assert student[0].tolist() == [3.0, 4.0]
    ema_update_(zip(teacher, student), momentum=1.0)
    torch.testing.assert_close(teacher[0], torch.tensor([1.2, 2.2]))
    ema_update_(zip(teacher, student), momentum=0.0)
    torch.testing.assert_close(teacher[0], torch.tensor([3.0, 4.0]))


def test_ema_update_of_modules_through_named_parameter_pairs():
    torch.manual_seed(0)
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    expected = {
        name: 0.994 * t.detach() + 0.006 * s.detach()
        for (name, t), s in zip(teacher.named_parameters(), student.parameters())
    }
    ema_update_(ema_parameter_pairs(teacher, student), momentum=0.994)
    for name, param in teacher.named_parameters():
        torch.testing.assert_close(param.detach(), expected[name])
        assert param.grad is None


def test_ema_rejects_mismatched_models_and_momentum():
    with pytest.raises(ValueError, match="differ"):
        ema_parameter_pairs(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="shape"):
        ema_update_([(torch.zeros(2), torch.zeros(3))], momentum=0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update_([(torch.zeros(2), torch.zeros(2))], momentum=1.5)


def test_ema_pairs_only_trainable_tensors_and_refuses_shared_trainables():
    student = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    student[0].requires_grad_(False)
    teacher = nn.Sequential(student[0], nn.Linear(2, 2))  # shares the frozen layer, like make_teacher
    pairs = ema_parameter_pairs(teacher, student)
    assert [(t is teacher[1].weight or t is teacher[1].bias) for t, _ in pairs] == [True, True]
    with pytest.raises(ValueError, match="shares the trainable tensor 1.weight"):
        ema_parameter_pairs(student, student)
