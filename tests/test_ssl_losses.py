"""DINO, iBOT and KoLeo losses and teacher centering against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from essa_monai.ssl import DINOLoss, IBOTPatchLoss, KoLeoLoss, masked_patch_weights, sinkhorn_knopp

# Student logits scaled by 1 / student_temp (0.1) give these log-softmaxes over 2 prototypes:
#   [0.1, 0.0] -> [1, 0] -> [1 - L1, -L1]   with L1 = log(1 + e)
#   [0.0, 0.2] -> [0, 2] -> [-L2, 2 - L2]   with L2 = log(1 + e^2)
#   [0.0, 0.0] -> [0, 0] -> [-log 2, -log 2]
L1 = math.log(1 + math.e)
L2 = math.log(1 + math.e**2)


def test_dino_loss_averages_cross_entropy_over_pairs_of_different_views():
    loss_fn = DINOLoss(out_dim=2, student_temp=0.1)
    student_global = torch.tensor([[0.1, 0.0], [0.0, 0.2]])  # view 0, view 1 of one image (B = 1)
    student_local = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.75, 0.25], [0.5, 0.5]])  # teacher view 0, view 1
    # pairs: (global 0, teacher 1), (global 1, teacher 0), (local, teacher 0), (local, teacher 1)
    ce_g0_t1 = -(0.5 * (1 - L1) + 0.5 * (-L1))  # = L1 - 0.5
    ce_g1_t0 = -(0.75 * (-L2) + 0.25 * (2 - L2))  # = L2 - 0.5
    ce_local = math.log(2)  # against any target
    expected = (ce_g0_t1 + ce_g1_t0 + 2 * ce_local) / 4
    loss = loss_fn(student_global, teacher, student_local)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # globals only: 2 pairs
    loss_global = loss_fn(student_global, teacher)
    assert loss_global.item() == pytest.approx((ce_g0_t1 + ce_g1_t0) / 2, rel=1e-6)


def test_dino_loss_means_over_batch_and_matches_dinov2_normalisation():
    torch.manual_seed(0)
    batch, k, n_local = 3, 5, 4
    loss_fn = DINOLoss(out_dim=k)
    s_global, s_local = torch.randn(2 * batch, k), torch.randn(n_local * batch, k)
    teacher = torch.softmax(torch.randn(2 * batch, k), dim=-1)
    t = teacher.view(2, batch, k)
    logp_g = torch.log_softmax(s_global / 0.1, dim=-1).view(2, batch, k)
    logp_l = torch.log_softmax(s_local / 0.1, dim=-1).view(n_local, batch, k)
    total = 0.0
    for i in range(2):
        total += -(t[1 - i] * logp_g[i]).sum(-1).mean()
    for v in range(n_local):
        for j in range(2):
            total += -(t[j] * logp_l[v]).sum(-1).mean()
    expected = total / (2 * 1 + n_local * 2)
    assert loss_fn(s_global, teacher, s_local).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dino_loss_gradient_flows_to_student_only():
    loss_fn = DINOLoss(out_dim=3)
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.softmax(torch.randn(4, 3), dim=-1)
    loss_fn(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_dino_teacher_softmax_uses_center_and_temperature():
    loss_fn = DINOLoss(out_dim=2)
    loss_fn.center.copy_(torch.tensor([[0.2, -0.2]]))
    probs = loss_fn.softmax_center_teacher(torch.tensor([[1.0, 0.0]]), teacher_temp=0.5)
    # (logits - center) / temp = [1.6, 0.4] -> p0 = 1 / (1 + e^-1.2)
    p0 = 1 / (1 + math.exp(-1.2))
    assert probs.tolist()[0] == pytest.approx([p0, 1 - p0], rel=1e-6)


def test_dino_center_update_is_ema_of_batch_mean_after_use():
    loss_fn = DINOLoss(out_dim=2, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor([[0.2, -0.2]]))
    logits = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # batch mean [0.5, 1.5]
    targets = loss_fn.teacher_targets(logits, teacher_temp=0.5)
    # the targets of this step use the old center ...
    expected_targets = torch.softmax((logits - torch.tensor([[0.2, -0.2]])) / 0.5, dim=-1)
    torch.testing.assert_close(targets, expected_targets)
    # ... then center = 0.9 * [0.2, -0.2] + 0.1 * [0.5, 1.5] = [0.23, -0.03]
    assert loss_fn.center.tolist()[0] == pytest.approx([0.23, -0.03], abs=1e-7)


def test_sinkhorn_knopp_one_iteration_matches_hand_computation():
    # exp(logits / temp) = [[1, 2], [3, 4]] (samples x prototypes); one round of prototype then
    # sample normalisation gives, per sample (rows): [3/7, 4/7] and [9/17, 8/17].
    temp = 0.5
    logits = temp * torch.log(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    q = sinkhorn_knopp(logits, teacher_temp=temp, n_iterations=1)
    expected = torch.tensor([[3 / 7, 4 / 7], [9 / 17, 8 / 17]])
    torch.testing.assert_close(q, expected, rtol=1e-6, atol=1e-7)


def test_sinkhorn_knopp_rows_sum_to_one_and_prototypes_share_the_batch():
    torch.manual_seed(0)
    n_samples, k = 12, 4
    # cosine-similarity logits, as the weight-normed DINO head produces
    features = torch.nn.functional.normalize(torch.randn(n_samples, 8), dim=-1)
    prototypes = torch.nn.functional.normalize(torch.randn(k, 8), dim=-1)
    logits = features @ prototypes.t()
    for n_iterations in (3, 200):
        q = sinkhorn_knopp(logits, teacher_temp=0.5, n_iterations=n_iterations)
        torch.testing.assert_close(q.sum(dim=1), torch.ones(n_samples))
    # the prototype constraint is met in the limit: each column sums to N / K = 3
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), n_samples / k), rtol=1e-5, atol=1e-5)
    # and three iterations already balance the prototypes far better than a plain softmax
    imbalance = lambda p: (p.sum(dim=0) - n_samples / k).abs().max().item()  # noqa: E731
    q3 = sinkhorn_knopp(logits, teacher_temp=0.5, n_iterations=3)
    assert imbalance(q3) < 0.1 * imbalance(torch.softmax(logits / 0.5, dim=-1))


def test_dino_sinkhorn_teacher_leaves_center_untouched():
    loss_fn = DINOLoss(out_dim=4)
    logits = torch.randn(6, 4)
    targets = loss_fn.teacher_targets(logits, teacher_temp=0.07, method="sinkhorn_knopp")
    torch.testing.assert_close(targets, sinkhorn_knopp(logits, 0.07, n_iterations=3))
    assert loss_fn.center.abs().sum() == 0
    with pytest.raises(ValueError, match="centering method"):
        loss_fn.teacher_targets(logits, 0.07, method="softmax")


def test_ibot_loss_weights_each_image_by_inverse_masked_count():
    loss_fn = IBOTPatchLoss(patch_out_dim=2, student_temp=0.1)
    # 3 images x 3 patches: image 0 masks patches 0 and 2, image 1 patch 1, image 2 nothing
    masks = torch.tensor([[True, False, True], [False, True, False], [False, False, False]])
    student = torch.tensor([[0.1, 0.0], [0.0, 0.0], [0.0, 0.2]])  # masked patches, flat order
    teacher = torch.tensor([[0.75, 0.25], [1.0, 0.0], [0.5, 0.5]])
    ce0 = -(0.75 * (1 - L1) + 0.25 * (-L1))
    ce1 = math.log(2)
    ce2 = -(0.5 * (-L2) + 0.5 * (2 - L2))
    expected = (0.5 * ce0 + 0.5 * ce1 + 1.0 * ce2) / 3  # divided by the 3 images, masked or not
    assert masked_patch_weights(masks).tolist() == [0.5, 0.5, 1.0]
    assert loss_fn(student, teacher, masks).item() == pytest.approx(expected, rel=1e-6)
    explicit = loss_fn(student, teacher, masks, masks_weight=torch.tensor([0.5, 0.5, 1.0]))
    assert explicit.item() == pytest.approx(expected, rel=1e-6)


def test_ibot_center_update_is_ema_of_masked_patch_mean():
    loss_fn = IBOTPatchLoss(patch_out_dim=3, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor([[1.0, 0.0, -1.0]]))
    logits = torch.tensor([[0.0, 3.0, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 3.0]])  # mean [1, 1, 1]
    targets = loss_fn.teacher_targets(logits, teacher_temp=1.0)
    torch.testing.assert_close(targets, torch.softmax(logits - torch.tensor([[1.0, 0.0, -1.0]]), dim=-1))
    assert loss_fn.center.tolist()[0] == pytest.approx([1.0, 0.1, -0.8], abs=1e-7)


def test_ibot_sinkhorn_teacher_normalises_masked_patches():
    loss_fn = IBOTPatchLoss(patch_out_dim=4)
    logits = torch.randn(7, 4)
    q = loss_fn.sinkhorn_knopp_teacher(logits, teacher_temp=0.07, n_masked_patches=torch.tensor([7]))
    torch.testing.assert_close(q.sum(dim=1), torch.ones(7))
    torch.testing.assert_close(q, sinkhorn_knopp(logits, 0.07, n_iterations=3, n_samples=7))


def test_ibot_loss_rejects_mismatched_weights():
    loss_fn = IBOTPatchLoss(patch_out_dim=2)
    masks = torch.tensor([[True, True]])
    with pytest.raises(ValueError, match="masks_weight"):
        loss_fn(torch.zeros(2, 2), torch.full((2, 2), 0.5), masks, masks_weight=torch.ones(3))


def test_koleo_loss_is_minus_mean_log_nearest_neighbour_distance():
    # unit vectors at 0, 60 and 180 degrees, given with arbitrary norms (the loss normalises them):
    # nearest-neighbour distances 1 (0<->60), 1 (60<->0) and sqrt(3) (180<->60)
    angles = torch.tensor([0.0, 60.0, 180.0]) * math.pi / 180
    x = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[2.0], [0.5], [3.0]])
    expected = -(math.log(1) + math.log(1) + math.log(math.sqrt(3))) / 3
    assert KoLeoLoss()(x).item() == pytest.approx(expected, abs=1e-6)
    # two views are handled separately and summed: no neighbour is taken across views
    two_views = torch.cat([x, x + 0.0])
    assert KoLeoLoss()(two_views, n_views=2).item() == pytest.approx(2 * expected, abs=1e-6)


def test_koleo_loss_gradient_pushes_nearest_neighbours_apart():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0]], requires_grad=True)
    loss = KoLeoLoss()(x)
    loss.backward()
    with torch.no_grad():
        moved = torch.nn.functional.normalize(x - 0.01 * x.grad, dim=-1)
        before = torch.nn.functional.normalize(x, dim=-1)
    assert (moved[0] - moved[1]).norm() > (before[0] - before[1]).norm()
