"""Learning-rate schedules: warmup (and re-warm), decay to the floor, wsd; the config checks every stage;
learning rates relative to the base model's peak."""

from __future__ import annotations

import dataclasses
import math

import pytest

from kopretrain.config.train import LR_DECAY_SHAPES, LR_SCHEDULES, OptimConfig
from kopretrain.errors import ConfigError, UserError
from kopretrain.plan.base_lr import KNOWN_BASE_PEAK_LRS, base_peak_lr
from kopretrain.train.schedule import DECAY_SHAPES, SCHEDULES, decay_steps, lr_at
from tests.train.conftest import smoke_cfg


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


# ---------------------------------------------------------------- warmup-stable-decay, re-warm
def wsd(num_steps=10, warmup=2, fraction=0.2, shape="linear", floor=0.1, start=0.0) -> list[float]:
    return [lr_at(s, num_steps=num_steps, peak_lr=1.0, warmup_steps=warmup, schedule="wsd", min_ratio=floor,
                  warmup_start=start, decay_fraction=fraction, decay_shape=shape) for s in range(num_steps)]


@pytest.mark.parametrize("shape,factor", [("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5))])
def test_wsd_warms_up_holds_the_peak_then_decays_over_the_last_fraction(shape, factor):
    values = wsd(shape=shape)  # 10 steps: 2 warmup, 6 stable, 2 decay (0.2 x 10)
    assert values[:2] == pytest.approx([0.5, 1.0])
    assert values[2:8] == [1.0] * 6
    assert values[8] == pytest.approx(0.1 + 0.9 * factor)  # decay step 1 of 2: progress 1/2
    assert values[9] == pytest.approx(0.1)  # the stage's last step sits at the floor


def test_wsd_1_sqrt_decay_exact_values_and_the_shapes_order():
    # Hägele et al. 2024's cooldown: lr = peak * (1 - sqrt(k / n)) for decay step k of n (floor 0)
    values = wsd(num_steps=20, warmup=0, fraction=0.25, shape="1-sqrt", floor=0.0)
    assert values[:15] == [1.0] * 15
    assert values[15:] == pytest.approx([1 - math.sqrt(k / 5) for k in range(1, 6)])
    lin = wsd(20, 0, 0.25, "linear", 0.0)
    assert all(values[k] < lin[k] for k in range(15, 19))  # 1-sqrt drops faster than linear, to the same floor
    assert values[19] == lin[19] == 0.0


def test_decay_steps_round_half_up_and_at_least_one():
    assert [decay_steps(n, 0.1) for n in (1, 4, 5, 10, 14, 15, 30, 1000)] == [1, 1, 1, 1, 1, 2, 3, 100]
    assert decay_steps(10, 0.15) == 2 and decay_steps(10, 1.0) == 10 and decay_steps(10, 0.0) == 0


def test_rewarm_starts_from_warmup_start_and_zero_start_is_the_old_warmup_bit_for_bit():
    rewarm = lrs_with(warmup=4, start=0.1)
    assert rewarm[:4] == pytest.approx([0.325, 0.55, 0.775, 1.0])  # 0.1 + 0.9 * k/4
    peak, floor = 3e-3, 0.1
    for schedule in ("cosine", "linear", "constant"):  # the formulas before wsd and re-warm existed
        old = [peak * (s + 1) / 3 if s < 3 else peak * (floor + (1 - floor) * SCHEDULES[schedule]((s - 3) / 6))
               for s in range(10)]
        assert [lr_at(s, num_steps=10, peak_lr=peak, warmup_steps=3, schedule=schedule, min_ratio=floor)
                for s in range(10)] == old


def lrs_with(warmup: int, start: float) -> list[float]:
    return [lr_at(s, num_steps=10, peak_lr=1.0, warmup_steps=warmup, schedule="cosine", min_ratio=0.1, warmup_start=start)
            for s in range(10)]


# ---------------------------------------------------------------- the config's checks, every stage
@pytest.mark.parametrize("overrides,message", [
    (["optim.lr_warmup_steps=7"], r"^optim\.lr_warmup_steps: 7 is longer than num_steps=6$"),
    (["num_steps=6", "stages=[{name:embed,num_steps:2,trainable:new_embeddings},{name:full,num_steps:4}]",
      "optim.lr_warmup_steps=3"], r"^optim\.lr_warmup_steps: 3 is longer than stage 'embed' \(2 steps\)$"),
    (["optim.lr_schedule=wsd", "optim.lr_warmup_steps=5", "optim.lr_decay_fraction=0.3"],
     r"^optim\.lr_decay_fraction: 0\.3 decays over 2 steps, which with lr_warmup_steps=5 is longer than num_steps=6$"),
    (["optim.lr_warmup_start=0.01"], r"^optim\.lr_warmup_start: must be in \[0, lr=0\.003\]"),
    (["optim.lr_decay_shape=sqrt"], r"^optim\.lr_decay_shape: 'sqrt' is not one of"),
    (["optim.lr_decay_fraction=0"], r"^optim\.lr_decay_fraction: must be in \(0, 1\]"),
    (["optim.lr_relative_to_base=true"], r"^optim\.base_peak_lr: the peak LR of 'llama' is not known"),
])
def test_schedule_config_errors_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(UserError, match=message):
        smoke_cfg(*overrides)


def test_config_and_schedule_count_the_wsd_decay_alike():
    base = smoke_cfg()

    def accepted(num_steps: int, fraction: float, warmup: int) -> bool:
        optim = OptimConfig(lr=3e-3, lr_schedule="wsd", lr_decay_fraction=fraction, lr_warmup_steps=warmup)
        try:
            dataclasses.replace(base, num_steps=num_steps, optim=optim)  # runs __post_init__ again
        except ConfigError:
            return False
        return True

    for num_steps in range(1, 30):
        for fraction in (0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0):
            for warmup in range(0, num_steps + 2):
                fits = warmup + decay_steps(num_steps, fraction) <= num_steps
                assert accepted(num_steps, fraction, warmup) == fits, (num_steps, fraction, warmup)
                if fits:  # and the schedule runs every step of the stage, ending at the floor
                    last = lr_at(num_steps - 1, num_steps=num_steps, peak_lr=1.0, warmup_steps=warmup, schedule="wsd",
                                 min_ratio=0.1, decay_fraction=fraction)
                    assert last == pytest.approx(0.1)


def test_lr_relative_to_the_base_scales_every_learning_rate():
    from kopretrain.train.worker import loop_plan

    cfg = smoke_cfg("model=pretrained", "model.name_or_path=/models/Llama-2-7b-hf", "optim.lr_relative_to_base=true",
                    "optim.lr=0.5", "optim.lr_warmup_start=0.1", "num_steps=6",
                    "stages=[{name:embed,num_steps:2,trainable:new_embeddings,lr:2.0},{name:full,num_steps:4}]")
    plan = loop_plan(cfg, 1500, 0, 1)
    assert plan.lr == pytest.approx(1.5e-4) and plan.lr_warmup_start == pytest.approx(3e-5)  # x Llama-2's 3e-4
    assert [s.lr for s in plan.stages] == [pytest.approx(6e-4), None]
    given = loop_plan(smoke_cfg("optim.lr_relative_to_base=true", "optim.base_peak_lr=1e-3", "optim.lr=0.25"), None, 0, 1)
    assert given.lr == pytest.approx(2.5e-4)
    absolute = loop_plan(smoke_cfg("optim.lr_schedule=wsd", "optim.lr_decay_shape=cosine"), None, 0, 1)
    assert (absolute.lr, absolute.lr_schedule, absolute.lr_decay_shape) == (3e-3, "wsd", "cosine")


def test_known_base_peak_lrs_by_name():
    assert base_peak_lr("meta-llama/Llama-2-7b-hf") == 3e-4
    assert base_peak_lr("/models/llama-2-70b/") == 1.5e-4
    assert base_peak_lr("huggyllama/llama-65b") == 1.5e-4
    assert base_peak_lr("TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T") == 4e-4
    assert base_peak_lr("EleutherAI/pythia-1.4b-deduped") == 2e-4
    assert base_peak_lr("EleutherAI/pythia-12b") == 1.2e-4
    for unknown in ("mistralai/Mistral-7B-v0.1", "google/gemma-7b", "llama-2-7", "EleutherAI/polyglot-ko-12.8b", ""):
        assert base_peak_lr(unknown) is None, unknown
    assert all(source for _, _, source in KNOWN_BASE_PEAK_LRS)


def test_the_config_tables_name_the_code_tables():
    assert set(LR_SCHEDULES) == set(SCHEDULES) and set(LR_DECAY_SHAPES) == set(DECAY_SHAPES)
