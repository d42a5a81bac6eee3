"""Per-rank micro-batch sizes (kopretrain/train/batch_geometry.py): one shared accumulation count,
disjoint rank slices that cover the global batch, proportional auto sizes, clear refusals."""

from __future__ import annotations

import pytest

from kopretrain.errors import UserError
from kopretrain.train.batch_geometry import auto_micro_batch_sizes, geometry, uniform
from kopretrain.train.mixing import shard_for_rank


def test_unequal_micro_batches_share_one_accumulation_count_and_cover_the_batch():
    g = geometry(16, [1, 3])
    assert g.num_accumulation_steps == 4
    assert [g.slice(r) for r in range(2)] == [(0, 4), (4, 12)]
    batch = list(range(16))
    assert g.take(batch, 0) + g.take(batch, 1) == batch
    g = geometry(24, [2, 6, 4])
    assert g.num_accumulation_steps == 2 and [g.slice(r) for r in range(3)] == [(0, 4), (4, 12), (16, 8)]


def test_uniform_is_todays_split():
    batch = list(range(16))
    g = uniform(16, 2, 4)
    assert g.num_accumulation_steps == 2
    assert [g.take(batch, r) for r in range(4)] == [shard_for_rank(batch, r, 4) for r in range(4)]


def test_a_global_batch_the_sizes_cannot_meet_is_one_line():
    with pytest.raises(UserError, match=r"^batch.micro_batch_size: micro-batches \[2, 3\] take 5 sequences per pass "
                                        r"over all ranks; batch.num_sequences_per_step=16 is not a multiple of it$"):
        geometry(16, [2, 3])
    with pytest.raises(UserError, match=">= 1"):
        geometry(16, [0, 4])


@pytest.mark.parametrize("n,peaks,cap,expected", [
    (16, [312.0, 989.0], 12, [4, 12]),  # one pass: 16 split 312:989 -> 3.83 : 12.17
    (16, [312.0, 989.0], 8, [2, 6]),    # capped at 8: two passes of [2, 6]
    (16, [312.0, 989.0], 3, [1, 3]),    # four passes of [1, 3]
    (12, [1.0, 1.0, 1.0], None, [4, 4, 4]),
    (8, [100.0, 1.0], None, [7, 1]),    # every rank gets at least one sequence
])
def test_auto_sizes_follow_the_peaks_and_meet_the_batch_exactly(n, peaks, cap, expected):
    sizes = auto_micro_batch_sizes(n, peaks, cap)
    assert sizes == expected
    g = geometry(n, sizes)
    assert g.num_accumulation_steps * sum(sizes) == n


def test_auto_refuses_what_cannot_fit():
    with pytest.raises(UserError, match=r"auto cannot split num_sequences_per_step=7 over 2 ranks with at least 1 and at most 3"):
        auto_micro_batch_sizes(7, [1.0, 2.0], 3)
