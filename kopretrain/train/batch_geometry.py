"""How a step's global batch is split over ranks whose micro-batches differ in size (pure, no torch).

    g = geometry(num_sequences_per_step=16, micro_batch_sizes=[1, 3])
    g.num_accumulation_steps      # 4: every rank runs 4 forward/backward passes per step
    g.slice(1)                    # (4, 12): rank 1 takes sequences [4, 16) of the global batch
    auto_micro_batch_sizes(16, peaks=[312.0, 989.0], max_micro_batch=8)   # [1, 3]

Heterogeneous GPU groups (A100 and H100 in one job) run different micro-batch SIZES but ONE
shared accumulation count: FSDP's all-gathers and reduce-scatters are collectives, so every
rank must make the same number of forward/backward passes per step. Rank r takes
num_accumulation_steps x micro_batch_sizes[r] consecutive sequences of the global batch, in
rank order; the global batch stays exactly `num_sequences_per_step` whatever the mix. With
equal sizes this is today's uniform split (mixing.shard_for_rank). The loss is summed per
token and divided by the step's global token count (kopretrain/train/loop.py), so the update
does not depend on how the batch was split.
"""

from __future__ import annotations

from dataclasses import dataclass

from kopretrain.errors import UserError


@dataclass(frozen=True)
class BatchGeometry:
    num_sequences_per_step: int
    micro_batch_sizes: tuple[int, ...]
    """Sequences per forward/backward, per rank."""
    num_accumulation_steps: int
    """Forward/backward passes per step, the same on every rank."""

    def slice(self, rank: int) -> tuple[int, int]:
        """(offset, count) of rank `rank`'s sequences in the global batch."""
        offset = self.num_accumulation_steps * sum(self.micro_batch_sizes[:rank])
        return offset, self.num_accumulation_steps * self.micro_batch_sizes[rank]

    def take(self, batch: list, rank: int) -> list:
        """Rank `rank`'s part of the global batch (a list of num_sequences_per_step items)."""
        assert len(batch) == self.num_sequences_per_step, (len(batch), self.num_sequences_per_step)
        offset, count = self.slice(rank)
        return batch[offset : offset + count]


def geometry(num_sequences_per_step: int, micro_batch_sizes: list[int], key: str = "batch.micro_batch_size") -> BatchGeometry:
    """The split of `num_sequences_per_step` over ranks with these micro-batch sizes; UserError if none is exact."""
    if not micro_batch_sizes or any(int(m) < 1 for m in micro_batch_sizes):
        raise UserError(f"{key}: every rank needs a micro-batch size >= 1 (got {list(micro_batch_sizes)})")
    per_pass = sum(micro_batch_sizes)
    if num_sequences_per_step % per_pass:
        raise UserError(f"{key}: micro-batches {list(micro_batch_sizes)} take {per_pass} sequences per pass over all ranks; "
                        f"batch.num_sequences_per_step={num_sequences_per_step} is not a multiple of it")
    return BatchGeometry(num_sequences_per_step, tuple(int(m) for m in micro_batch_sizes), num_sequences_per_step // per_pass)


def uniform(num_sequences_per_step: int, micro_batch_size: int, world_size: int) -> BatchGeometry:
    """Every rank the same micro-batch size (today's single homogeneous group)."""
    return geometry(num_sequences_per_step, [micro_batch_size] * world_size)


def _apportion(total: int, peaks: list[float]) -> list[int]:
    """`total` split in proportion to `peaks`, at least 1 each, summing to `total` (largest remainder)."""
    quotas = [total * p / sum(peaks) for p in peaks]
    sizes = [max(1, int(q)) for q in quotas]
    while sum(sizes) < total:  # the rank furthest below its quota gets one more (lowest rank on ties)
        sizes[max(range(len(sizes)), key=lambda r: (quotas[r] - sizes[r], -r))] += 1
    while sum(sizes) > total:  # only when minimums of 1 overshoot: take from the one furthest above
        sizes[max((r for r in range(len(sizes)) if sizes[r] > 1), key=lambda r: (sizes[r] - quotas[r], -r))] -= 1
    return sizes


def auto_micro_batch_sizes(num_sequences_per_step: int, peaks: list[float], max_micro_batch: int | None = None) -> list[int]:
    """Per-rank micro-batch sizes in proportion to each rank's peak throughput, meeting the global batch exactly.

    Tries accumulation counts from the fewest (largest micro-batches) up: the first count that
    divides the global batch and whose proportional split keeps every rank at >= 1 and <=
    `max_micro_batch` sequences wins. UserError when no count does.
    """
    if not peaks or any(p <= 0 for p in peaks):
        raise UserError(f"batch.micro_batch_size: auto needs a positive peak per rank (got {peaks})")
    ranks = len(peaks)
    for accumulation in range(1, num_sequences_per_step // ranks + 1):
        if num_sequences_per_step % accumulation:
            continue
        sizes = _apportion(num_sequences_per_step // accumulation, peaks)
        if max_micro_batch is None or max(sizes) <= max_micro_batch:
            return sizes
    raise UserError(f"batch.micro_batch_size: auto cannot split num_sequences_per_step={num_sequences_per_step} over "
                    f"{ranks} ranks with at least 1 and at most {max_micro_batch} sequences per micro-batch")
