"""The mixing sampler: weights honoured, deterministic, exact resume, disjoint ranks."""

from __future__ import annotations

import json

import pytest

from kopretrain.train.mixing import MixingSampler, shard_for_rank

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
