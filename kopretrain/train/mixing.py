"""Weighted domain mixing over packed-token datasets: which sequences make up each step.

    sampler = MixingSampler({"ko": 5000, "en": 3000}, {"ko": 0.8, "en": 0.2}, seed=0)
    batch = sampler.next_batch(8)            # [("ko", 4211), ("en", 17), ...]: the global batch
    mine = shard_for_rank(batch, rank, world_size)
    state = sampler.state_dict()             # JSON-able; load_state_dict(state) resumes exactly

How a step's global batch is drawn (pure numpy, no Ray):
1. Domain counts are stratified, not sampled: slot k goes to the domain furthest behind its
   target share (smooth weighted round robin), so after N sequences every domain's realized
   share is within 1/N of its weight. With `replay_ratio=0.05` and 8 sequences a step that is
   one English sequence every ~2.5 steps, instead of a Bernoulli lottery.
2. Within a domain, sequences come from a fresh permutation each epoch, seeded by
   (seed, domain, epoch): no sequence repeats within an epoch.
3. The order of the slots within a step is shuffled by a generator seeded by (seed, step), so
   every rank and micro-batch sees the mixture.
Every generator is derived from counters, so the counters (step, per-domain cursor, drawn
counts) are the whole sampler state: resuming from `state_dict()` reproduces the stream
exactly. All ranks compute the same global batch (indices only, cheap) and each takes its own
contiguous slice, so ranks never draw the same sequence and the math does not depend on the
number of workers.
"""

from __future__ import annotations

import zlib

import numpy as np


def _domain_key(domain: str) -> int:
    """A stable integer per domain name (adding a domain never reshuffles the others)."""
    return zlib.crc32(domain.encode("utf-8"))


class MixingSampler:
    """Deterministic weighted sampler over domains of `sizes[domain]` sequences each."""

    def __init__(self, sizes: dict[str, int], weights: dict[str, float], seed: int, seq_lens: dict[str, int] | None = None):
        assert weights and all(w > 0 for w in weights.values()), "weights must be positive (drop zero-share domains)"
        assert abs(sum(weights.values()) - 1.0) < 1e-6, "weights must sum to 1"
        missing = [d for d in weights if sizes.get(d, 0) < 1]
        assert not missing, f"no sequences for domains {missing}"
        self.domains = sorted(weights)
        self.weights = {d: float(weights[d]) for d in self.domains}
        self.sizes = {d: int(sizes[d]) for d in self.domains}
        self.seq_lens = {d: int((seq_lens or {}).get(d, 1)) for d in self.domains}
        self.seed = int(seed)
        self.step = 0
        self.cursor = {d: [0, 0] for d in self.domains}  # [epoch, position in that epoch's permutation]
        self.drawn = {d: 0 for d in self.domains}  # sequences drawn so far
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
        """Domains of the next n slots: each goes to the domain with the largest deficit."""
        counts = dict(self.drawn)
        total = sum(counts.values())
        out = []
        for _ in range(n):
            total += 1
            best = max(self.domains, key=lambda d: (self.weights[d] * total - counts[d], -self.domains.index(d)))
            counts[best] += 1
            out.append(best)
        return out

    def next_batch(self, n: int) -> list[tuple[str, int]]:
        """The next global batch: n (domain, sequence index) pairs, shuffled within the step."""
        batch = [(d, self._take(d)) for d in self._allocate(n)]
        order = np.random.default_rng([self.seed, 0x5EED, self.step]).permutation(n)
        self.step += 1
        return [batch[i] for i in order]

    # ------------------------------------------------------------------ reporting
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
            "step": self.step,
            "cursor": {d: list(c) for d, c in self.cursor.items()},
            "drawn": dict(self.drawn),
        }

    def load_state_dict(self, state: dict) -> None:
        assert state["seed"] == self.seed and state["weights"] == self.weights, "sampler state is from another mix/seed"
        self.step = int(state["step"])
        self.cursor = {d: [int(e), int(p)] for d, (e, p) in state["cursor"].items()}
        self.drawn = {d: int(n) for d, n in state["drawn"].items()}


def shard_for_rank(batch: list, rank: int, world_size: int) -> list:
    """Rank `rank`'s contiguous slice of the global batch (disjoint across ranks)."""
    assert len(batch) % world_size == 0, "global batch must divide evenly over ranks"
    per_rank = len(batch) // world_size
    return batch[rank * per_rank : (rank + 1) * per_rank]
