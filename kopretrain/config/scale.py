"""Heterogeneous worker groups of one training job (`scale.groups`). Torch-free, Ray-free.

    scale:
      groups:
        - {name: a100, num_workers: 8, label_selector: {ray.io/accelerator-type: A100}, micro_batch_size: 2}
        - {name: h100, num_workers: 8, label_selector: {ray.io/accelerator-type: H100}, micro_batch_size: 6}

One Ray Train job holds every group: `ScalingConfig.label_selector` gets one selector per worker
(Ray Train 2.60 takes a list), while the resources per worker are one shape for all workers (Ray
Train reserves `[resources_per_worker] * num_workers`), so groups are told apart by node labels,
never by resources. Every rank runs the same number of micro-batches per step; the micro-batch
SIZE is per group (or `auto`: in proportion to each device's peak bf16 TFLOPS).

`group_selector`, `selector_matches` and `assign_groups` are the pure rules the driver and the
workers share: which label selector a group places its workers with, and which group each rank
is in, from the node labels of every rank (ranks do not follow the selector list's order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from kopretrain.config.common import require
from kopretrain.plan.hardware import PEAK_TFLOPS_BF16

AUTO = "auto"
ACCELERATOR_LABEL = "ray.io/accelerator-type"  # the Ray node label of a GPU node's accelerator type


def parse_micro_batch_size(value: Any) -> Optional[int | str]:
    """An int >= 1, 'auto' or None (= batch.micro_batch_size); ValueError otherwise."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise ValueError(f"{value!r} is not a positive integer or 'auto'")
    if int(value) < 1:
        raise ValueError(f"must be >= 1 or 'auto' (got {value})")
    return int(value)


@dataclass
class ScaleGroupConfig:
    """One group of identical workers (one accelerator type) within a heterogeneous job."""

    name: str = ""
    """Group name (in errors, logs and the report), e.g. a100."""
    num_workers: int = 1
    """Training workers of this group (one GPU each when scale.use_gpu)."""
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    """Extra Ray resources per worker; Ray Train 2.60 reserves one shape for all workers, so every group must give the same."""
    label_selector: dict[str, str] = field(default_factory=dict)
    """Ray node labels this group's workers must match ({} = {ray.io/accelerator-type: <accelerator_type>}, or any node)."""
    micro_batch_size: Any = None
    """Sequences per forward/backward on each worker of this group: an int, auto (in proportion to peak TFLOPS) or null (= batch.micro_batch_size)."""
    accelerator_type: str = ""
    """Ray accelerator type of the group (A100, H100, ...): the default selector and the peak for auto and MFU."""
    peak_tflops: float = 0.0
    """Peak dense bf16 TFLOPS of one device (0 = by accelerator_type from PEAK_TFLOPS_BF16; unknown = equal shares)."""

    def __post_init__(self):
        require(bool(str(self.name).strip()), "name", "must not be empty (e.g. a100)")
        require(self.num_workers >= 1, "num_workers", f"must be >= 1 (got {self.num_workers})")
        try:
            self.micro_batch_size = parse_micro_batch_size(self.micro_batch_size)
        except ValueError as exc:
            require(False, "micro_batch_size", str(exc))
        require(all(v >= 0 for v in self.resources_per_worker.values()), "resources_per_worker", "amounts must be >= 0")
        require(self.peak_tflops >= 0, "peak_tflops", f"must be >= 0 (got {self.peak_tflops})")

    def selector(self) -> dict[str, str]:
        """The label selector Ray places this group's workers with."""
        if self.label_selector:
            return {str(k): str(v) for k, v in self.label_selector.items()}
        return {ACCELERATOR_LABEL: self.accelerator_type} if self.accelerator_type else {}

    def peak(self) -> float:
        """Peak bf16 TFLOPS of one device of this group (0 = unknown)."""
        kind = self.accelerator_type or self.selector().get(ACCELERATOR_LABEL, "")
        return self.peak_tflops or PEAK_TFLOPS_BF16.get(kind, 0.0)


def check_groups(groups: list[ScaleGroupConfig]) -> None:
    """What holds across groups; ConfigError keys as `groups[i].<key>` (the caller prefixes `scale.`)."""
    seen: dict[str, int] = {}
    for i, g in enumerate(groups):
        require(g.name not in seen, f"groups[{i}].name", f"'{g.name}' is also the name of groups[{seen.get(g.name)}]")
        seen[g.name] = i
    first = groups[0]
    for i, g in enumerate(groups[1:], start=1):
        require(dict(g.resources_per_worker) == dict(first.resources_per_worker), f"groups[{i}].resources_per_worker",
                f"{dict(g.resources_per_worker)} differs from groups[0]'s {dict(first.resources_per_worker)}: Ray Train 2.60 "
                "reserves one resource shape for every worker; tell groups apart by label_selector")
    autos = [g.micro_batch_size == AUTO for g in groups]
    if any(autos):
        for i, g in enumerate(groups):
            require(autos[i], f"groups[{i}].micro_batch_size", f"{g.micro_batch_size} next to 'auto' in groups[{autos.index(True)}]: "
                    "'auto' sizes every group or none")


def sequences_per_pass(groups: list[ScaleGroupConfig], micro_batch_size: int, num_workers: int) -> int:
    """Sequences of one micro-batch on every worker (global batch = this x accumulation steps).
    Without groups or with `auto` sizes, `micro_batch_size` per worker (auto: its mean)."""
    if not groups or groups[0].micro_batch_size == AUTO:
        return micro_batch_size * num_workers
    return sum(g.num_workers * (g.micro_batch_size or micro_batch_size) for g in groups)


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Ray's label-selector rule: `v` equals, `!v` differs (or absent), `in(a,b)` one of, `!in(a,b)` none of."""
    for key, want in selector.items():
        have = labels.get(key)
        negate = want.startswith("!")
        want = want[1:] if negate else want
        values = [v.strip() for v in want[3:-1].split(",")] if want.startswith("in(") and want.endswith(")") else [want]
        hit = have is not None and have in values
        if hit == negate:
            return False
    return True


def assign_groups(groups: list[ScaleGroupConfig], labels_by_rank: list[dict[str, str]]) -> list[int]:
    """Group index of each rank: every rank in a group whose selector its node matches, each group
    exactly `num_workers` ranks (a bipartite matching, deterministic: the same on every rank)."""
    slots = [i for i, g in enumerate(groups) for _ in range(g.num_workers)]
    if len(slots) != len(labels_by_rank):
        raise ValueError(f"{len(labels_by_rank)} workers for {len(slots)} group slots")
    fits = [[s for s, gi in enumerate(slots) if selector_matches(groups[gi].selector(), labels)] for labels in labels_by_rank]
    slot_owner: dict[int, int] = {}

    def place(rank: int, seen: set[int]) -> bool:  # augmenting path (Kuhn's algorithm)
        for s in fits[rank]:
            if s not in seen:
                seen.add(s)
                if s not in slot_owner or place(slot_owner[s], seen):
                    slot_owner[s] = rank
                    return True
        return False

    for rank in range(len(labels_by_rank)):
        if not place(rank, set()):
            raise ValueError(f"rank {rank} on a node labelled {labels_by_rank[rank]} fits no free group of "
                             f"{[(g.name, g.selector(), g.num_workers) for g in groups]}")
    group_of = [0] * len(labels_by_rank)
    for s, rank in slot_owner.items():
        group_of[rank] = slots[s]
    return group_of
