"""Learning-rate schedules: a pure function of the step within a stage.

    lr = lr_at(step_in_stage, num_steps=500, peak_lr=1e-3, warmup_steps=50, schedule="cosine", min_ratio=0.1)

Linear warmup from 0 over `warmup_steps` (step 0 trains at peak/warmup, not at 0), then the
decay of `SCHEDULES[schedule]` from the peak down to `peak * min_ratio` at the stage's last
step. Because the learning rate is a function of the step, the scheduler's whole state is the
step counter, which the checkpoint holds: resumed runs get the same learning rates.
"""

from __future__ import annotations

import math


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _linear(progress: float) -> float:
    return 1.0 - progress


def _constant(progress: float) -> float:
    return 1.0


# lr_schedule -> decay factor in [0, 1] as a function of progress in [0, 1] after warmup.
SCHEDULES = {"cosine": _cosine, "linear": _linear, "constant": _constant}


def lr_at(step: int, *, num_steps: int, peak_lr: float, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Learning rate of 0-based `step` of a stage that has `num_steps` steps."""
    assert 0 <= step < num_steps, (step, num_steps)
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = num_steps - warmup_steps - 1
    progress = (step - warmup_steps) / decay_steps if decay_steps > 0 else 0.0
    return peak_lr * (min_ratio + (1.0 - min_ratio) * SCHEDULES[schedule](progress))
