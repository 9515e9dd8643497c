"""Cosine schedules with warm-up (DINOv2 CosineScheduler) and the per-quantity helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from essa_monai.ssl import (
    CosineScheduler,
    last_layer_lr_schedule,
    lr_schedule,
    teacher_momentum_schedule,
    teacher_temp_schedule,
    weight_decay_schedule,
)


def test_cosine_scheduler_freeze_then_linear_warmup_then_cosine():
    s = CosineScheduler(1.0, 0.0, total_iters=12, warmup_iters=3, start_warmup_value=0.1, freeze_iters=2)
    assert len(s) == 12 and s.schedule.shape == (12,)
    assert [s[0], s[1]] == [0.0, 0.0]  # frozen
    assert [s[2], s[3], s[4]] == pytest.approx([0.1, 0.55, 1.0])  # warm-up, both ends included
    # cosine over the last 7 iterations: value(i) = 0.5 (1 + cos(pi i / 7))
    assert s[5] == pytest.approx(1.0)
    assert s[8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    assert s[11] == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 7)))
    assert s[12] == 0.0 and s[10_000] == 0.0  # final value after the end


def test_cosine_scheduler_rejects_warmup_longer_than_schedule():
    with pytest.raises(ValueError, match="warmup_iters"):
        CosineScheduler(1.0, 0.0, total_iters=5, warmup_iters=6)


def test_lr_schedule_warms_up_from_zero_then_decays_to_min_lr():
    s = lr_schedule(base_lr=1e-3, total_iters=100, warmup_iters=10, min_lr=1e-6)
    assert s[0] == 0.0
    assert s[9] == pytest.approx(1e-3)  # end of warm-up
    assert s[10] == pytest.approx(1e-3)  # start of the cosine
    assert s[99] == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + math.cos(math.pi * 89 / 90)))
    assert s[100] == 1e-6
    assert np.all(np.diff(s.schedule[10:]) <= 0)


def test_last_layer_lr_is_zero_while_frozen_then_follows_lr():
    lr = lr_schedule(base_lr=1e-3, total_iters=50, warmup_iters=10)
    last = last_layer_lr_schedule(base_lr=1e-3, total_iters=50, warmup_iters=10, freeze_last_layer_iters=5)
    assert np.all(last.schedule[:5] == 0.0)
    np.testing.assert_array_equal(last.schedule[5:], lr.schedule[5:])


def test_weight_decay_goes_from_0_04_to_0_2_by_cosine():
    s = weight_decay_schedule(total_iters=100)
    assert s[0] == pytest.approx(0.04)
    assert s[50] == pytest.approx(0.12)  # cosine midpoint
    assert s[99] == pytest.approx(0.2 + 0.5 * (0.04 - 0.2) * (1 + math.cos(math.pi * 99 / 100)))
    assert s[100] == 0.2


def test_teacher_momentum_goes_from_0_994_to_1_by_cosine():
    s = teacher_momentum_schedule(total_iters=1000)
    assert s[0] == pytest.approx(0.994)
    assert s[500] == pytest.approx(0.997)
    assert 0.99999 < s[999] < 1.0
    assert s[1000] == 1.0
    assert np.all(np.diff(s.schedule) >= 0)


def test_teacher_temperature_warms_up_linearly_from_0_04_to_0_07_then_stays():
    s = teacher_temp_schedule(warmup_iters=31)
    assert s[0] == pytest.approx(0.04)
    assert s[15] == pytest.approx(0.055)  # halfway through 31 points
    assert s[30] == pytest.approx(0.07)  # end of warm-up
    assert s[31] == 0.07 and s[100_000] == 0.07
    np.testing.assert_allclose(np.diff(s.schedule), 0.001)
