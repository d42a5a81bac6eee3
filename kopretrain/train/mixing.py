"""Weighted domain mixing over packed-token datasets: which sequences make up each step.

    sampler = MixingSampler({"ko": 5000, "en": 3000}, {"ko": 0.8, "en": 0.2}, seed=0)
    sampler = MixingSampler(sizes, build_mix_schedule(cfg.mix, stages), seed=0)   # weights that move
    batch = sampler.next_batch(8)            # [("ko", 4211), ("en", 17), ...]: the global batch
    mine = shard_for_rank(batch, rank, world_size)
    state = sampler.state_dict()             # JSON-able; load_state_dict(state) resumes exactly

How a step's global batch is drawn (pure numpy, no Ray):
1. Domain counts are stratified, not sampled (smooth weighted round robin on the step's weights,
   `schedule.weights_at(step)`, kopretrain/train/mix_schedule.py): every slot adds each domain's
   weight to its credit, the domain with the largest credit takes the slot and pays 1. The
   credit left at the end of a step (`carry`) moves to the next one. With constant weights the
   carry is exactly the deficit against the target share, so after N sequences every domain's
   realized share is within about 1/N of its weight (within one sequence for two domains); with
   `replay_ratio=0.05` and 8 sequences a step that is one English sequence every ~2.5 steps,
   instead of a Bernoulli lottery.
   The carry is bounded whatever the schedule: the credits sum to 0 (weights sum to 1, each slot
   pays 1) and a domain pays only while it holds the largest credit, which is >= 1/k after the
   weights are added (k domains), so every credit stays in (-1, k - 1). Hence step s draws
   n * w(s) +- k sequences of each domain, and ANY window of steps draws its scheduled share to
   within 2(k - 1) sequences: no burst to catch up when the weights change, no drift. Over
   100 steps of 8 sequences that is 0.25% for two domains, under 1% for up to five.
2. Within a domain, sequences come from a fresh permutation each epoch, seeded by
   (seed, domain, epoch): no sequence repeats within an epoch.
3. The order of the slots within a step is shuffled by a generator seeded by (seed, step), so
   every rank and micro-batch sees the mixture.
Every generator is derived from counters, so the counters (step, per-domain cursor, drawn
counts) and the carry are the whole sampler state: resuming from `state_dict()` reproduces the
stream exactly. The state also records the schedule and each domain's number of sequences: a
resume under another schedule is a bug (the configuration fingerprint refuses it first), one on
changed packed data fails (`DataChanged`, one line) unless allowed, when each changed domain
starts a new epoch of its new size. All ranks compute the same global batch (indices only,
cheap) and each takes its own contiguous slice, so ranks never draw the same sequence and the
math does not depend on the number of workers.
"""

from __future__ import annotations

import zlib

import numpy as np

from kopretrain.errors import UserError
from kopretrain.train.mix_schedule import MixSchedule


class DataChanged(UserError):
    """Resuming sampler state recorded with other domain sizes (the packed data changed)."""


def _domain_key(domain: str) -> int:
    """A stable integer per domain name (adding a domain never reshuffles the others)."""
    return zlib.crc32(domain.encode("utf-8"))


def describe_size_changes(recorded: dict[str, int], sizes: dict[str, int]) -> list[str]:
    """'ko: 1000 -> 1200 sequences' for every domain whose recorded size differs from `sizes`."""
    return [f"{d}: {int(recorded[d])} -> {int(sizes[d])} sequences"
            for d in sorted(sizes) if d in recorded and int(recorded[d]) != int(sizes[d])]


class MixingSampler:
    """Deterministic weighted sampler over domains of `sizes[domain]` sequences each.

    `weights`: constant shares {domain: share} (positive, summing to 1), or a MixSchedule."""

    def __init__(self, sizes: dict[str, int], weights: dict[str, float] | MixSchedule, seed: int,
                 seq_lens: dict[str, int] | None = None):
        if isinstance(weights, MixSchedule):
            self.schedule = weights
        else:
            assert weights and all(w > 0 for w in weights.values()), "weights must be positive (drop zero-share domains)"
            assert abs(sum(weights.values()) - 1.0) < 1e-6, "weights must sum to 1"
            self.schedule = MixSchedule.constant(weights)
        self.domains = self.schedule.domains
        self.weights = self.schedule.weights_at(0)  # the first step's shares
        missing = [d for d in self.domains if sizes.get(d, 0) < 1]
        assert not missing, f"no sequences for domains {missing}"
        self.sizes = {d: int(sizes[d]) for d in self.domains}
        self.seq_lens = {d: int((seq_lens or {}).get(d, 1)) for d in self.domains}
        self.seed = int(seed)
        self.step = 0
        self.cursor = {d: [0, 0] for d in self.domains}  # [epoch, position in that epoch's permutation]
        self.drawn = {d: 0 for d in self.domains}  # sequences drawn so far
        self.carry = {d: 0.0 for d in self.domains}  # credit left after the last step (bounded: see the module doc)
        self._perm: dict[str, tuple[int, np.ndarray]] = {}

    # ------------------------------------------------------------------ drawing
    def _permutation(self, domain: str, epoch: int) -> np.ndarray:
        cached = self._perm.get(domain)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, _domain_key(domain), epoch])
            cached = (epoch, rng.permutation(self.sizes[domain]))
            self._perm[domain] = cached
        return cached[1]

    def _take(self, domain: str) -> int:
        epoch, pos = self.cursor[domain]
        index = int(self._permutation(domain, epoch)[pos])
        pos += 1
        if pos == self.sizes[domain]:
            epoch, pos = epoch + 1, 0
        self.cursor[domain] = [epoch, pos]
        self.drawn[domain] += 1
        return index

    def _allocate(self, n: int) -> list[str]:
        """Domains of the next n slots (smooth weighted round robin at this step's weights); updates the carry."""
        weights = self.schedule.weights_at(self.step)
        out = []
        if self.schedule.is_constant():  # the same credits as the carry below, in closed form (bit for bit
            counts = dict(self.drawn)    # the arithmetic of constant mixes before schedules existed)
            total = sum(counts.values())
            for _ in range(n):
                total += 1
                best = max(self.domains, key=lambda d: (weights[d] * total - counts[d], -self.domains.index(d)))
                counts[best] += 1
                out.append(best)
            self.carry = {d: weights[d] * total - counts[d] for d in self.domains}
            return out
        credit = dict(self.carry)
        for _ in range(n):
            for d in self.domains:
                credit[d] += weights[d]
            best = max(self.domains, key=lambda d: (credit[d], -self.domains.index(d)))
            credit[best] -= 1.0
            out.append(best)
        self.carry = credit
        return out

    def next_batch(self, n: int) -> list[tuple[str, int]]:
        """The next global batch: n (domain, sequence index) pairs, shuffled within the step."""
        batch = [(d, self._take(d)) for d in self._allocate(n)]
        order = np.random.default_rng([self.seed, 0x5EED, self.step]).permutation(n)
        self.step += 1
        return [batch[i] for i in order]

    # ------------------------------------------------------------------ reporting
    def scheduled_weights(self, step: int | None = None) -> dict[str, float]:
        """The shares of 0-based `step` (default: the step drawn last)."""
        return self.schedule.weights_at(self.step - 1 if step is None else step)

    def token_share(self) -> dict[str, float]:
        """Realized share of tokens per domain so far (tokens drawn from the domain / all tokens)."""
        tokens = {d: self.drawn[d] * self.seq_lens[d] for d in self.domains}
        total = sum(tokens.values())
        return {d: (t / total if total else 0.0) for d, t in tokens.items()}

    def tokens_drawn(self) -> dict[str, int]:
        return {d: self.drawn[d] * self.seq_lens[d] for d in self.domains}

    # ------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "weights": dict(self.weights),
            "schedule": self.schedule.to_state(),
            "sizes": dict(self.sizes),
            "step": self.step,
            "cursor": {d: list(c) for d, c in self.cursor.items()},
            "drawn": dict(self.drawn),
            "carry": dict(self.carry),
        }

    def load_state_dict(self, state: dict, allow_changed_sizes: bool = False) -> None:
        """Continue from `state`. Domain sizes that differ from the recorded ones raise DataChanged
        (one line), unless `allow_changed_sizes`: then each changed domain starts a new epoch."""
        assert state["seed"] == self.seed, "sampler state is from another seed"
        assert state.get("schedule", [[0, state["weights"]]]) == self.schedule.to_state(), "sampler state is from another mix"
        changes = describe_size_changes(state.get("sizes") or {}, self.sizes)
        if changes and not allow_changed_sizes:
            raise DataChanged(f"data.tokens_dir: the packed data changed since the checkpoint ({'; '.join(changes)}); "
                              "set data.allow_changed_data=true to continue on the new data, or resume=never")
        self.step = int(state["step"])
        self.cursor = {d: [int(e), int(p)] for d, (e, p) in state["cursor"].items()}
        self.drawn = {d: int(n) for d, n in state["drawn"].items()}
        total = sum(self.drawn.values())
        self.carry = {d: float(state["carry"][d]) if "carry" in state else self.weights[d] * total - self.drawn[d]
                      for d in self.domains}
        for d in self.domains:
            if d in (state.get("sizes") or {}) and int(state["sizes"][d]) != self.sizes[d]:
                self.cursor[d] = [self.cursor[d][0] + 1, 0]  # the new data: a fresh epoch, deterministically
        self._perm = {}


def shard_for_rank(batch: list, rank: int, world_size: int) -> list:
    """Rank `rank`'s contiguous slice of the global batch (disjoint across ranks)."""
    assert len(batch) % world_size == 0, "global batch must divide evenly over ranks"
    per_rank = len(batch) // world_size
    return batch[rank * per_rank : (rank + 1) * per_rank]
