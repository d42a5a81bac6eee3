"""Which worker group each rank of a heterogeneous job is in, and its micro-batch size (worker side).

    groups = find_groups(cfg, rank, world_size)   # None without scale.groups
    groups.micro_batch_sizes[rank]                # this rank's micro-batch size
    groups.names[groups.group_of_rank[rank]]      # its group's name

Ray Train places worker i with `label_selector[i]` (kopretrain/train/command.py:scaling_config),
but ranks are numbered by node, not in that order. So each worker reads its own node's labels
(`ray.get_runtime_context().get_node_labels()`), the labels are all-gathered over a gloo group
(also under nccl: an object gather must not depend on which GPU a rank drives), and every rank
runs the same deterministic matching (`kopretrain.config.scale.assign_groups`), so every rank
knows every rank's group and micro-batch size.

`rank_micro_batch_sizes` is the pure rule: a group's int size for each of its ranks, or with
`auto` the sequences of one micro-batch on every worker (batch.micro_batch_size, the mean, x the
workers) split in proportion to each rank's peak bf16 TFLOPS (`batch_geometry.auto_micro_batch_sizes`;
a peak unknown: equal), so the accumulation count and the global batch stay what the config says.
"""

from __future__ import annotations

from dataclasses import dataclass

from kopretrain.config.scale import AUTO, assign_groups, sequences_per_pass
from kopretrain.config.train import TrainConfig


@dataclass
class RankGroups:
    """Every rank's group (same on every rank)."""

    names: list[str]
    """Group names, in scale.groups order."""
    group_of_rank: list[int]
    """Index into names/scale.groups of each rank."""
    micro_batch_sizes: list[int]
    """Sequences per micro-batch of each rank."""
    peak_tflops: list[float]
    """Peak bf16 TFLOPS of each rank's device (0 = unknown)."""
    node_labels: list[dict[str, str]]
    """Each rank's node labels (without ray.io/node-id), for the report."""

    def describe(self) -> str:
        """One line: 'a100: ranks 0,1 x 2 seq, h100: ranks 2,3 x 6 seq'."""
        parts = []
        for gi, name in enumerate(self.names):
            ranks = [r for r, g in enumerate(self.group_of_rank) if g == gi]
            sizes = sorted({self.micro_batch_sizes[r] for r in ranks})
            parts.append(f"{name}: ranks {','.join(map(str, ranks))} x {'/'.join(map(str, sizes))} seq")
        return ", ".join(parts)

    def summary(self) -> dict:
        """report.json's `scale_groups`: per group its ranks, their micro-batch sizes and node labels."""
        out = {}
        for gi, name in enumerate(self.names):
            ranks = [r for r, g in enumerate(self.group_of_rank) if g == gi]
            out[name] = {"ranks": ranks, "micro_batch_sizes": [self.micro_batch_sizes[r] for r in ranks],
                         "peak_tflops": [self.peak_tflops[r] for r in ranks], "node_labels": [self.node_labels[r] for r in ranks]}
        return out


def rank_micro_batch_sizes(cfg: TrainConfig, group_of_rank: list[int]) -> list[int]:
    """Each rank's micro-batch size (pure). Sums to the sequences of one micro-batch on every worker."""
    groups = cfg.scale.groups
    if groups[0].micro_batch_size != AUTO:
        return [groups[g].micro_batch_size or cfg.batch.micro_batch_size for g in group_of_rank]
    from kopretrain.train.batch_geometry import auto_micro_batch_sizes

    per_pass = sequences_per_pass(groups, cfg.batch.micro_batch_size, cfg.scale.num_workers)  # mean x workers
    peaks = [groups[g].peak() for g in group_of_rank]
    if not all(peaks):  # a device of unknown peak: equal shares for all
        peaks = [1.0] * len(peaks)
    # one pass's sequences in proportion to the peaks (>= 1 each, summing exactly); the accumulation
    # count stays cfg.num_accumulation_steps = num_sequences_per_step / per_pass
    return list(auto_micro_batch_sizes(per_pass, peaks))


def check_group_nodes(cfg: TrainConfig, nodes: list[dict], local: bool) -> None:
    """Before the fit: each group's label selector must match a live node (`ray.nodes()`). A local
    instance cannot grow, so there it is a one-line error; on a cluster a warning (an autoscaler
    adds the group's pods when Ray Train asks for them)."""
    from kopretrain.config.scale import selector_matches
    from kopretrain.errors import UserError

    labels = [n.get("Labels") or {} for n in nodes if n.get("Alive", n.get("alive"))]
    for i, g in enumerate(cfg.scale.groups):
        if g.selector() and not any(selector_matches(g.selector(), lab) for lab in labels):
            what = f"scale.groups[{i}].label_selector: no node of the Ray {'instance' if local else 'cluster'} has labels {g.selector()}"
            if local:
                raise UserError(f"{what} (a local instance has none; Ray Train would wait forever); "
                                "join the cluster with the group's nodes (ray.address=...)")
            from kopretrain.tracking import warn

            warn(f"{what} now; Ray Train waits until such nodes join")


def _all_gather(value, world_size: int) -> list:
    import torch.distributed as dist

    if world_size == 1 or not dist.is_initialized():
        return [value]
    group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    out = [None] * world_size
    dist.all_gather_object(out, value, group=group)
    if group is not None:
        dist.destroy_process_group(group)
    return out


def find_groups(cfg: TrainConfig, rank: int, world_size: int) -> RankGroups | None:
    """Every rank's group from the node labels of every rank (a collective: all ranks call it)."""
    if not cfg.scale.groups:
        return None
    import ray

    mine = {str(k): str(v) for k, v in ray.get_runtime_context().get_node_labels().items()}
    labels = _all_gather(mine, world_size)
    try:
        group_of_rank = assign_groups(cfg.scale.groups, labels)
    except ValueError as exc:
        raise RuntimeError(f"scale.groups: the workers' nodes do not fit the groups: {exc}") from None
    return RankGroups(
        names=[g.name for g in cfg.scale.groups], group_of_rank=group_of_rank,
        micro_batch_sizes=rank_micro_batch_sizes(cfg, group_of_rank),
        peak_tflops=[cfg.scale.groups[g].peak() for g in group_of_rank],
        node_labels=[{k: v for k, v in lab.items() if k != "ray.io/node-id"} for lab in labels],
    )
