"""The mixing sampler: weights honoured (also when a schedule moves them: every 100-step window), deterministic,
exact resume, changed data refused, disjoint ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kopretrain.config.train import MIX_SCHEDULES as CONFIG_MIX_SCHEDULES
from kopretrain.config.train import MixConfig
from kopretrain.errors import UserError
from kopretrain.train.mix_schedule import MIX_SCHEDULES, MixSchedule, build_mix_schedule
from kopretrain.train.mixing import DataChanged, MixingSampler, shard_for_rank
from tests.train.conftest import smoke_cfg

SIZES = {"ko": 50, "en": 30, "code": 7}


def draw(sampler: MixingSampler, steps: int, n: int = 8) -> list:
    return [sampler.next_batch(n) for _ in range(steps)]


@pytest.mark.parametrize("weights", [{"ko": 0.8, "en": 0.2}, {"ko": 0.95, "en": 0.05}, {"ko": 0.5, "en": 0.3, "code": 0.2}])
def test_realized_share_tracks_the_weights_within_one_sequence(weights):
    sampler = MixingSampler(SIZES, weights, seed=3, seq_lens={d: 128 for d in SIZES})
    drawn = 0
    for _ in range(40):
        drawn += len(sampler.next_batch(8))
        share = sampler.token_share()
        for domain, w in weights.items():
            # stratified allocation: at every point each domain is within one sequence of its target
            assert abs(share[domain] * drawn - w * drawn) <= 1.0 + 1e-9, (domain, drawn, share)
    assert set(share) == set(weights)
    assert sampler.tokens_drawn() == {d: sampler.drawn[d] * 128 for d in weights}


def test_token_share_counts_tokens_not_sequences():
    sampler = MixingSampler({"ko": 10, "en": 10}, {"ko": 0.5, "en": 0.5}, seed=0, seq_lens={"ko": 100, "en": 300})
    draw(sampler, 5, 4)
    assert sampler.token_share() == pytest.approx({"ko": 0.25, "en": 0.75})


def test_same_seed_same_stream_other_seed_other_stream():
    a = draw(MixingSampler(SIZES, {"ko": 0.8, "en": 0.2}, seed=1), 20)
    b = draw(MixingSampler(SIZES, {"ko": 0.8, "en": 0.2}, seed=1), 20)
    c = draw(MixingSampler(SIZES, {"ko": 0.8, "en": 0.2}, seed=2), 20)
    assert a == b
    assert a != c


def test_no_sequence_repeats_within_an_epoch_and_every_one_is_seen():
    sampler = MixingSampler({"ko": 50}, {"ko": 1.0}, seed=0)
    first_epoch = [i for batch in draw(sampler, 5, 10) for _, i in batch]
    assert sorted(first_epoch) == list(range(50))
    second_epoch = [i for batch in draw(sampler, 5, 10) for _, i in batch]
    assert sorted(second_epoch) == list(range(50))
    assert first_epoch != second_epoch, "each epoch gets its own permutation"


def test_resume_from_state_dict_continues_the_exact_stream():
    full = MixingSampler(SIZES, {"ko": 0.7, "en": 0.2, "code": 0.1}, seed=5)
    expected = draw(full, 30)
    first = MixingSampler(SIZES, {"ko": 0.7, "en": 0.2, "code": 0.1}, seed=5)
    head = draw(first, 12)
    state = json.loads(json.dumps(first.state_dict()))  # goes through train_state.json
    resumed = MixingSampler(SIZES, {"ko": 0.7, "en": 0.2, "code": 0.1}, seed=5)
    resumed.load_state_dict(state)
    assert head + draw(resumed, 18) == expected
    assert resumed.token_share() == full.token_share()


def test_ranks_draw_disjoint_slices_that_cover_the_global_batch():
    batch = MixingSampler({"ko": 1000, "en": 1000}, {"ko": 0.8, "en": 0.2}, seed=0).next_batch(16)
    shards = [shard_for_rank(batch, r, 4) for r in range(4)]
    assert [len(s) for s in shards] == [4, 4, 4, 4]
    assert sum(shards, []) == batch
    assert len(set(batch)) == len(batch)
    with pytest.raises(AssertionError):
        shard_for_rank(batch, 0, 3)


def test_a_step_mixes_domains_in_shuffled_order():
    sampler = MixingSampler({"ko": 1000, "en": 1000}, {"ko": 0.5, "en": 0.5}, seed=0)
    orders = {tuple(d for d, _ in sampler.next_batch(8)) for _ in range(10)}
    assert all(sorted(o) == ["en"] * 4 + ["ko"] * 4 for o in orders)
    assert len(orders) > 1, "slot order is shuffled per step, so every rank sees both domains"


# ---------------------------------------------------------------- mixing schedules (mix.schedule)
LONG = {"ko": 5000, "en": 3000, "code": 700}


def counts_per_step(sampler: MixingSampler, steps: int, n: int = 8) -> list[dict[str, int]]:
    out = []
    for _ in range(steps):
        batch = sampler.next_batch(n)
        out.append({d: sum(1 for dd, _ in batch if dd == d) for d in sampler.domains})
    return out


def worst_window_error(sampler: MixingSampler, steps: int = 2000, n: int = 8, window: int = 100) -> float:
    """Max over every window of `window` consecutive steps and every domain of |realized token
    share in the window - the mean scheduled weight in the window| (all domains share a seq_len)."""
    counts = counts_per_step(sampler, steps, n)
    scheduled = [sampler.schedule.weights_at(s) for s in range(steps)]
    worst = 0.0
    for d in sampler.domains:
        drawn = np.cumsum([0] + [c[d] for c in counts])
        target = np.cumsum([0.0] + [w[d] for w in scheduled])
        for a in range(steps - window + 1):
            realized = (drawn[a + window] - drawn[a]) / (window * n)
            worst = max(worst, abs(realized - (target[a + window] - target[a]) / window))
    return worst


SCHEDULES_UNDER_TEST = {
    "linear 50:50 -> 90:10": [(0, {"ko": 0.5, "en": 0.5}), (1999, {"ko": 0.9, "en": 0.1})],
    "constant 80:20": [(0, {"ko": 0.8, "en": 0.2})],
    "constant 50:30:20": [(0, {"ko": 0.5, "en": 0.3, "code": 0.2})],
    "stages 50:50 then 95:5": [(0, {"ko": 0.5, "en": 0.5}), (999, {"ko": 0.5, "en": 0.5}),
                               (1000, {"ko": 0.95, "en": 0.05}), (1999, {"ko": 0.95, "en": 0.05})],
    "linear 3 domains, code 0 -> 0.3": [(0, {"ko": 0.6, "en": 0.4, "code": 0.0}), (1999, {"ko": 0.6, "en": 0.1, "code": 0.3})],
}


@pytest.mark.parametrize("name", sorted(SCHEDULES_UNDER_TEST))
def test_every_100_step_window_is_within_1_percent_of_its_scheduled_share(name):
    schedule = MixSchedule.from_knots(SCHEDULES_UNDER_TEST[name])
    k = len(schedule.domains)
    worst = worst_window_error(MixingSampler(LONG, schedule, seed=7, seq_lens={d: 128 for d in LONG}))
    assert worst <= 0.01, (name, worst)
    assert worst < 2 * (k - 1) / 800, (name, worst)  # the module's bound: 2(k-1) sequences per window


def test_the_window_check_catches_a_sampler_that_tracks_the_cumulative_share():
    """A sampler that allocates by the deficit since step 0 at the *current* weights bursts when
    the weights change: the window check fails it (so the check can fail)."""

    class Cumulative(MixingSampler):
        def _allocate(self, n):
            weights, counts = self.schedule.weights_at(self.step), dict(self.drawn)
            total, out = sum(counts.values()), []
            for _ in range(n):
                total += 1
                best = max(self.domains, key=lambda d: weights[d] * total - counts[d])
                counts[best] += 1
                out.append(best)
            return out

    schedule = MixSchedule.from_knots(SCHEDULES_UNDER_TEST["stages 50:50 then 95:5"])
    assert worst_window_error(Cumulative(LONG, schedule, seed=7)) > 0.04  # all ko for ~450 steps after the change


def test_no_step_bursts_and_the_carry_stays_bounded():
    for name, knots in SCHEDULES_UNDER_TEST.items():
        sampler = MixingSampler(LONG, MixSchedule.from_knots(knots), seed=1)
        k = len(sampler.domains)
        for step in range(2000):
            weights = sampler.schedule.weights_at(step)
            counts = counts_per_step(sampler, 1)[0]
            for d in sampler.domains:
                assert abs(counts[d] - 8 * weights[d]) < k, (name, step, d, counts, weights)
                assert -1 < sampler.carry[d] < k - 1, (name, step, sampler.carry)


def test_a_schedule_resumes_exactly_from_state_dict_mid_schedule():
    schedule = MixSchedule.from_knots(SCHEDULES_UNDER_TEST["linear 3 domains, code 0 -> 0.3"])
    expected = draw(MixingSampler(LONG, schedule, seed=5), 300)
    first = MixingSampler(LONG, schedule, seed=5)
    head = draw(first, 137)
    state = json.loads(json.dumps(first.state_dict()))  # through train_state.json
    assert state["sizes"] == LONG and state["schedule"] == schedule.to_state()
    resumed = MixingSampler(LONG, schedule, seed=5)
    resumed.load_state_dict(state)
    assert head + draw(resumed, 163) == expected
    other = MixingSampler(LONG, MixSchedule.from_knots(SCHEDULES_UNDER_TEST["linear 50:50 -> 90:10"]), seed=5)
    with pytest.raises(AssertionError, match="another mix"):
        other.load_state_dict(state)


def test_changed_domain_sizes_refuse_to_resume_unless_allowed_then_continue_deterministically():
    first = MixingSampler(LONG, {"ko": 0.8, "en": 0.2}, seed=5)
    draw(first, 20)
    state = json.loads(json.dumps(first.state_dict()))
    changed = {"ko": 5000, "en": 2500}
    with pytest.raises(DataChanged, match=r"^data\.tokens_dir: the packed data changed since the checkpoint "
                                          r"\(en: 3000 -> 2500 sequences\); set data\.allow_changed_data=true"):
        MixingSampler(changed, {"ko": 0.8, "en": 0.2}, seed=5).load_state_dict(state)
    streams = []
    for _ in range(2):
        resumed = MixingSampler(changed, {"ko": 0.8, "en": 0.2}, seed=5)
        resumed.load_state_dict(state, allow_changed_sizes=True)
        assert resumed.cursor["en"] == [1, 0] and resumed.cursor["ko"] == first.cursor["ko"]  # en: a new epoch
        streams.append(draw(resumed, 30))
    assert streams[0] == streams[1]
    en = [i for batch in streams[0] for d, i in batch if d == "en"]
    assert len(set(en)) == len(en) and max(en) < 2500  # the new epoch's permutation of the new size


def test_mix_schedules_from_the_config():
    stages = [("embed", 2), ("full", 8)]
    linear = build_mix_schedule(MixConfig(replay_ratio=0.5, schedule="linear", final_weights={"ko": 0.9, "en": 0.1}), stages)
    assert linear.weights_at(0) == {"ko": 0.5, "en": 0.5}
    assert linear.weights_at(9) == pytest.approx({"ko": 0.9, "en": 0.1})
    assert linear.weights_at(3) == pytest.approx({"ko": 0.5 + 0.4 * 3 / 9, "en": 0.5 - 0.4 * 3 / 9})
    per_stage = build_mix_schedule(MixConfig(replay_ratio=None, weights={"ko": 0.7, "en": 0.3}, schedule="stages",
                                             stage_weights={"embed": {"ko": 1.0, "en": 0.0}}), stages)
    assert [per_stage.weights_at(s) for s in (0, 1, 2, 9)] == [{"ko": 1.0, "en": 0.0}] * 2 + [{"ko": 0.7, "en": 0.3}] * 2
    constant = build_mix_schedule(MixConfig(replay_ratio=0.2), stages)
    assert constant.is_constant() and constant.weights_at(5) == pytest.approx({"ko": 0.8, "en": 0.2})
    ko_only = build_mix_schedule(MixConfig(replay_ratio=0.0), stages)
    assert ko_only.domains == ["ko"]  # a domain that never has a share is never read
    assert set(MIX_SCHEDULES) == set(CONFIG_MIX_SCHEDULES)


@pytest.mark.parametrize("overrides,message", [
    (["mix.schedule=linear"], r"^mix\.final_weights: schedule=linear needs the shares at the last step"),
    (["mix.schedule=linear", "+mix.final_weights={ko:0.9,en:0.2}"], r"^mix\.final_weights: shares must sum to 1"),
    (["mix.schedule=linear", "+mix.final_weights={ko:0.9,code:0.1}"], r"^mix\.final_weights: \['code', 'ko'\]: name the mix's domains"),
    (["+mix.final_weights={ko:0.9,en:0.1}"], r"^mix\.final_weights: is for schedule=linear"),
    (["mix.schedule=stages", "+mix.stage_weights={full:{ko:1.0}}"], r"^mix\.stage_weights: \['full'\]: no such stage"),
    (["mix.schedule=ramp"], r"^mix\.schedule: 'ramp' is not one of"),
])
def test_mix_schedule_config_errors_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message):
        smoke_cfg(*overrides)


def test_constant_weights_draw_the_stream_they_drew_before_schedules():
    """Before mix schedules the allocation was by the deficit since step 0 (the rule above): with
    constant weights today's sampler must draw exactly that stream (same losses for the same seed)."""

    class Before(MixingSampler):
        def _allocate(self, n):
            counts, total, out = dict(self.drawn), sum(self.drawn.values()), []
            for _ in range(n):
                total += 1
                best = max(self.domains, key=lambda d: (self.weights[d] * total - counts[d], -self.domains.index(d)))
                counts[best] += 1
                out.append(best)
            return out

    for weights in ({"ko": 0.8, "en": 0.2}, {"ko": 0.9, "en": 0.1}, {"ko": 0.5, "en": 0.3, "code": 0.2}, {"ko": 0.95, "en": 0.05}):
        assert draw(MixingSampler(LONG, weights, seed=3), 500) == draw(Before(LONG, weights, seed=3), 500), weights


def test_the_mix_schedule_is_in_the_fingerprint():
    from kopretrain.train.fingerprint import changed_keys, fingerprint, math_keys

    constant = math_keys(smoke_cfg())
    ramp = math_keys(smoke_cfg("mix.schedule=linear", "+mix.final_weights={ko: 0.9, en: 0.1}"))
    steeper = math_keys(smoke_cfg("mix.schedule=linear", "+mix.final_weights={ko: 0.95, en: 0.05}"))
    assert len({fingerprint(constant), fingerprint(ramp), fingerprint(steeper)}) == 3
    assert changed_keys(constant, ramp) == ['mix.final_weights.en (unset) -> 0.1', 'mix.final_weights.ko (unset) -> 0.9',
                                            'mix.schedule (unset) -> "linear"']
