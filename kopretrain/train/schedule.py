"""Learning-rate schedules: a pure function of the step within a stage.

    lr = lr_at(step_in_stage, num_steps=500, peak_lr=1e-3, warmup_steps=50, schedule="cosine", min_ratio=0.1)
    lr = lr_at(s, num_steps=1000, peak_lr=3e-4, warmup_steps=100, schedule="wsd", min_ratio=0.0,
               warmup_start=3e-5, decay_fraction=0.2, decay_shape="1-sqrt")

Every schedule warms up linearly from `warmup_start` (default 0) to the peak over `warmup_steps`
(step 0 trains at start + (peak - start) / warmup_steps, not at the start value), then follows
`SCHEDULES[schedule]` down to `peak * min_ratio` at the stage's last step:

- `cosine`, `linear`: decay over every step after the warmup; `constant`: stay at the peak.
- `wsd` (warmup-stable-decay): stay at the peak, then decay over the last
  `decay_steps(num_steps, decay_fraction)` steps with `DECAY_SHAPES[decay_shape]`. Hägele et al.
  2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations"
  (arXiv:2405.18392): a cooldown of 10-20% of the steps matches cosine, and the `1-sqrt` shape
  (lr factor 1 - sqrt(progress)) beats linear.

The re-warm (`warmup_start` > 0) is for continuing from a base that ended its own schedule at a
low learning rate (e.g. 10% of its peak): start there instead of at 0. Because the learning rate
is a function of the step, the scheduler's whole state is the step counter, which the checkpoint
holds: resumed runs get the same learning rates. Pure: no torch.
"""

from __future__ import annotations

import math


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _linear(progress: float) -> float:
    return 1.0 - progress


def _constant(progress: float) -> float:
    return 1.0


def _one_minus_sqrt(progress: float) -> float:
    return 1.0 - math.sqrt(progress)


# optim.lr_schedule -> decay factor in [0, 1] as a function of progress in [0, 1] after warmup
# (wsd: after the stable phase; its factor is DECAY_SHAPES[decay_shape]).
SCHEDULES = {"cosine": _cosine, "linear": _linear, "constant": _constant, "wsd": None}

# optim.lr_decay_shape -> the factor of wsd's decay phase (Hägele et al. 2024 find 1-sqrt better than linear).
DECAY_SHAPES = {"linear": _linear, "cosine": _cosine, "1-sqrt": _one_minus_sqrt}


def decay_steps(num_steps: int, decay_fraction: float) -> int:
    """Steps of wsd's decay phase in a stage of `num_steps`: fraction x steps rounded half up, at least 1
    (config/train.py checks warmup + decay <= num_steps with the same expression)."""
    if decay_fraction <= 0:
        return 0
    return min(num_steps, max(1, math.floor(decay_fraction * num_steps + 0.5)))


def lr_at(step: int, *, num_steps: int, peak_lr: float, warmup_steps: int, schedule: str, min_ratio: float,
          warmup_start: float = 0.0, decay_fraction: float = 0.2, decay_shape: str = "linear") -> float:
    """Learning rate of 0-based `step` of a stage that has `num_steps` steps."""
    assert 0 <= step < num_steps, (step, num_steps)
    assert warmup_steps <= num_steps, "a warmup longer than its stage (the config refuses it)"
    if step < warmup_steps:
        return warmup_start + (peak_lr - warmup_start) * (step + 1) / warmup_steps
    if schedule == "wsd":
        num_decay = decay_steps(num_steps, decay_fraction)
        first_decay = num_steps - num_decay
        if step < first_decay or num_decay == 0:
            return peak_lr
        # decay step k of n (1-based): progress k/n, so the last step of the stage sits at the floor
        progress = (step - first_decay + 1) / num_decay
        return peak_lr * (min_ratio + (1.0 - min_ratio) * DECAY_SHAPES[decay_shape](progress))
    decay = num_steps - warmup_steps - 1
    progress = (step - warmup_steps) / decay if decay > 0 else 0.0
    return peak_lr * (min_ratio + (1.0 - min_ratio) * SCHEDULES[schedule](progress))
