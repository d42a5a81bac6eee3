"""Mixing weights as a function of the step: the schedule the MixingSampler follows.

    schedule = build_mix_schedule(cfg.mix, [(s.name, s.num_steps) for s in cfg.resolved_stages()])
    schedule.weights_at(step)            # {"ko": 0.62, "en": 0.38}: the global step's shares (sum 1)
    MixingSampler(sizes, schedule, seed)  # the sampler draws step s's batch at weights_at(s)

A schedule is a list of knots (step, weights): piecewise linear between knots, constant before
the first and after the last. `MIX_SCHEDULES` maps `mix.schedule` to how the knots are made:

- `constant`: one knot, the mix's weights (today's behaviour).
- `linear`: the mix's weights at step 0, `mix.final_weights` at the run's last step, linearly
  in between (e.g. {ko: 0.5, en: 0.5} -> {ko: 0.9, en: 0.1}: ko 0.5 + 0.4 * s / (num_steps - 1)).
- `stages`: each stage draws at its own weights, `mix.stage_weights[<stage name>]` (stages not
  named keep the mix's weights); the weights step at the stage boundaries.

Pure (no numpy, torch, Ray): the knots are JSON-able, so the sampler's checkpoint records them and
refuses to resume under another schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from kopretrain.config.train import MixConfig

Weights = dict[str, float]


@dataclass(frozen=True)
class MixSchedule:
    """Piecewise-linear weights over global steps (knots sorted by step, steps distinct)."""

    knots: tuple[tuple[int, tuple[tuple[str, float], ...]], ...]

    @classmethod
    def from_knots(cls, knots: list[tuple[int, Weights]]) -> "MixSchedule":
        steps = [s for s, _ in knots]
        assert knots and steps == sorted(set(steps)), f"knots must have distinct increasing steps: {steps}"
        domains = sorted({d for _, w in knots for d in w})
        for step, w in knots:
            assert all(v >= 0 for v in w.values()) and abs(sum(w.values()) - 1.0) < 1e-6, (step, w)
        return cls(tuple((int(s), tuple((d, float(w.get(d, 0.0))) for d in domains)) for s, w in knots))

    @classmethod
    def constant(cls, weights: Weights) -> "MixSchedule":
        return cls.from_knots([(0, weights)])

    @property
    def domains(self) -> list[str]:
        """Domains with a positive share at some step (the sampler reads only these)."""
        return sorted({d for _, w in self.knots for d, v in w if v > 0})

    def weights_at(self, step: int) -> Weights:
        """The shares of global step `step` (0-based), over `domains`."""
        knots = self.knots
        if step <= knots[0][0]:
            return self._pick(knots[0][1])
        for (s0, w0), (s1, w1) in zip(knots, knots[1:]):
            if step < s1:
                t = (step - s0) / (s1 - s0)
                return self._pick(tuple((d, a + (b - a) * t) for (d, a), (_, b) in zip(w0, w1)))
        return self._pick(knots[-1][1])

    def _pick(self, weights: tuple[tuple[str, float], ...]) -> Weights:
        active = set(self.domains)
        return {d: v for d, v in weights if d in active}

    def is_constant(self) -> bool:
        return len(self.knots) == 1

    def to_state(self) -> list:
        """JSON-able form (the sampler's state_dict holds it)."""
        return [[s, dict(w)] for s, w in self.knots]


def _constant(mix: MixConfig, stages: list[tuple[str, int]]) -> list[tuple[int, Weights]]:
    return [(0, mix.resolved_weights(keep_zero=True))]


def _linear(mix: MixConfig, stages: list[tuple[str, int]]) -> list[tuple[int, Weights]]:
    last = sum(n for _, n in stages) - 1
    start = mix.resolved_weights(keep_zero=True)
    return [(0, start), (last, dict(mix.final_weights))] if last > 0 else [(0, start)]


def _stages(mix: MixConfig, stages: list[tuple[str, int]]) -> list[tuple[int, Weights]]:
    knots, first = [], 0
    for name, num_steps in stages:
        weights = dict(mix.stage_weights.get(name) or mix.resolved_weights(keep_zero=True))
        knots.append((first, weights))
        if num_steps > 1:
            knots.append((first + num_steps - 1, weights))  # flat within the stage, a step at the boundary
        first += num_steps
    return knots


# mix.schedule -> (mix config, [(stage name, num_steps)]) -> knots
MIX_SCHEDULES = {"constant": _constant, "linear": _linear, "stages": _stages}


def build_mix_schedule(mix: MixConfig, stages: list[tuple[str, int]]) -> MixSchedule:
    """The schedule of `mix` over a run made of `stages` (TrainConfig.resolved_stages())."""
    return MixSchedule.from_knots(MIX_SCHEDULES[mix.schedule](mix, stages))
