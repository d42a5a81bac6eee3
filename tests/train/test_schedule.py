"""Learning-rate schedules: warmup, decay to the floor, a pure function of the step."""

from __future__ import annotations

import math

import pytest

from kopretrain.train.schedule import SCHEDULES, lr_at


def lrs(schedule: str, num_steps=10, warmup=3, peak=1.0, floor=0.1) -> list[float]:
    return [lr_at(s, num_steps=num_steps, peak_lr=peak, warmup_steps=warmup, schedule=schedule, min_ratio=floor)
            for s in range(num_steps)]


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_warmup_is_linear_and_reaches_the_peak(schedule):
    values = lrs(schedule)
    assert values[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_cosine_and_linear_decay_monotonically_to_the_floor():
    for schedule in ("cosine", "linear"):
        values = lrs(schedule)
        decay = values[2:]
        assert all(a >= b for a, b in zip(decay, decay[1:]))
        assert decay[0] == pytest.approx(1.0) and decay[-1] == pytest.approx(0.1)
    cos = lrs("cosine")
    assert cos[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))  # 3 of 6 decay steps
    assert lrs("linear")[6] == pytest.approx(0.1 + 0.9 * (1 - 3 / 6))


def test_constant_stays_at_the_peak_and_one_step_stages_train_at_the_peak():
    assert lrs("constant")[3:] == [1.0] * 7
    assert lr_at(0, num_steps=1, peak_lr=2e-3, warmup_steps=0, schedule="cosine", min_ratio=0.1) == 2e-3


def test_out_of_range_step_is_a_bug():
    with pytest.raises(AssertionError):
        lr_at(10, num_steps=10, peak_lr=1.0, warmup_steps=0, schedule="cosine", min_ratio=0.1)
