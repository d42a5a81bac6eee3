"""Float keys that used to take inf: `optim.lr=inf` trained with an infinite LR (loss nan) and
`plan.num_tokens=inf` would project an infinite run. Each is now one line naming the key."""

from __future__ import annotations

import pytest

from kopretrain.cli import compose_typed
from kopretrain.errors import UserError

STAGES = "stages=[{name: a, num_steps: 3, lr: inf}, {name: b, num_steps: 3}]"


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["optim.lr=inf"], r"^optim\.lr: must be a finite number \(got inf\)$"),
        (["optim.lr=-1"], r"^optim\.lr: must be > 0 \(got -1.0\)$"),
        (["optim.lr_relative_to_base=true", "optim.base_peak_lr=inf"], r"^optim\.base_peak_lr: must be a finite number >= 0$"),
        ([STAGES], r"^stages\[0\]\.lr: must be a finite number > 0$"),
        (["plan.num_tokens=inf"], r"^plan\.num_tokens: must be a finite number >= 0"),
        (["plan.num_tokens=-1"], r"^plan\.num_tokens: must be a finite number >= 0"),
    ],
)
def test_infinite_or_negative_values_fail_in_one_line(overrides, expected):
    with pytest.raises(UserError, match=expected) as info:
        compose_typed("train", ["experiment=smoke"] + overrides)
    assert "\n" not in str(info.value)


def test_finite_values_still_pass():
    cfg = compose_typed("train", ["experiment=smoke", "plan.num_tokens=15e9", "optim.lr=1e-3"])
    assert cfg.plan.num_tokens == 15e9 and cfg.optim.lr == 1e-3
