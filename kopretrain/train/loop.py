"""The training loop: plain torch, readable top to bottom, the same for every strategy.

    state = train(strategy, datasets, sampler, plan, TrainState(), hooks)

For each stage (kopretrain/train/stages.py): set what is trainable, give the strategy a fresh
optimizer, then for each step: draw the global batch from the mixing sampler, take this
rank's slice (kopretrain/train/batch_geometry.py: per-rank micro-batch sizes, one shared
accumulation count), run its micro-batches forward and backward, and take one optimizer step
at the scheduled learning rate.

Token-weighted loss: each micro-batch's loss is a SUM over its target tokens
(kopretrain/train/loss.py). The step's global number of target tokens is known before any
forward: every rank draws the whole global batch and packed rows mask nothing, so it is
(seq_len - 1) per sequence, computed locally without a collective (checked against the
all-reduced per-domain counts after the step); every backward is scaled by
world_size / that count, so the reduced gradient (DDP/FSDP2/ZeRO average over ranks) is the
gradient of (global loss sum) / (global tokens): the same update however the batch is split
over ranks and micro-batches. Per-domain loss sums and token counts form one [domains, 2]
tensor, all-reduced once per step and read on the host once: the step record's `loss` is
sum / tokens, `loss_by_domain` the same per domain present in the step. `hooks` is how the outside world
(Ray Train, MLflow: kopretrain/train/worker.py; a list in the tests) sees each step and
saves checkpoints; the loop itself imports no Ray and no MLflow.

Exact resume: everything the next step depends on is in `TrainState` (step, sampler
counters, loss history) plus the strategy's model and optimizer state, plus the RNG state
(kopretrain/train/checkpoint.py). `resume_dir` restores the strategy state when the loop
reaches the stage that was running; a checkpoint taken at a stage boundary restores only the
weights (the next stage starts a fresh optimizer anyway).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from kopretrain.data.packed import PackedDataset
from kopretrain.train.adapters import is_adapted, plan_adapter_stage
from kopretrain.train.batch_geometry import geometry
from kopretrain.train.loss import MicroBatch
from kopretrain.train.mixing import MixingSampler
from kopretrain.train.schedule import lr_at
from kopretrain.train.stages import embedding_param_names, plan_stage
from kopretrain.train.strategies.base import Strategy


@dataclass
class StageSpec:
    """One stage as the loop needs it (from TrainConfig.resolved_stages())."""

    name: str
    num_steps: int
    trainable: str = "all"
    lr: float | None = None


@dataclass
class LoopPlan:
    """Everything the loop needs besides the strategy, the data and the state."""

    stages: list[StageSpec]
    lr: float
    lr_warmup_steps: int = 0
    lr_schedule: str = "cosine"
    lr_min_ratio: float = 0.1
    lr_warmup_start: float = 0.0
    lr_decay_fraction: float = 0.2
    lr_decay_shape: str = "1-sqrt"
    weight_decay: float = 0.0
    num_sequences_per_step: int = 8
    micro_batch_size: int = 2
    micro_batch_sizes: list[int] | None = None
    """Per-rank micro-batch sizes (heterogeneous groups); None = micro_batch_size on every rank."""
    num_base_rows: int | None = None
    checkpoint_every_num_steps: int = 0
    rank: int = 0
    world_size: int = 1


@dataclass
class TrainState:
    """What a checkpoint must hold besides the model and optimizer (JSON-able)."""

    step: int = 0
    """Optimizer steps completed (over all stages)."""
    sampler: dict = field(default_factory=dict)
    losses: list[dict] = field(default_factory=list)
    """One record per completed step: step, stage, loss, loss_by_domain, lr, grad_norm, tokens (cumulative)."""
    stages: list[dict] = field(default_factory=list)
    """Summaries of completed stages."""
    num_resumes: int = 0
    """Worker-group restarts this run survived (set on rank 0 by kopretrain/train/worker.py)."""
    train_seconds: float = 0.0
    """Wall time spent in training steps (not checkpoints), for tokens per second."""
    base_eval: dict = field(default_factory=dict)
    """The base's held-out scores per domain, taken before the first step (`eval.at_end`; {} = none)."""


class Hooks(Protocol):
    def on_step(self, state: TrainState, record: dict) -> None: ...
    def save_checkpoint(self, state: TrainState) -> None: ...
    # optional: on_start(state), called once before the first step of a run that starts at step 0


def stage_bounds(stages: list[StageSpec]) -> list[tuple[int, int]]:
    """[first step, end step) of each stage in global step numbers."""
    bounds, first = [], 0
    for stage in stages:
        bounds.append((first, first + stage.num_steps))
        first += stage.num_steps
    return bounds


def micro_batches(items: list[tuple[str, int]], datasets: dict[str, PackedDataset], size: int,
                  device: torch.device, domains: list[str] | None = None) -> list[MicroBatch]:
    """This rank's sequences as micro-batches of `size` rows, each row tagged with its domain's index."""
    domains = domains or sorted(datasets)
    index = {d: k for k, d in enumerate(domains)}
    out = []
    for i in range(0, len(items), size):
        part = items[i : i + size]
        rows = np.stack([datasets[d][j] for d, j in part])
        out.append(MicroBatch.build(rows, [index[d] for d, _ in part], len(domains), device))
    return out


def train_step(strategy: Strategy, batches: list[MicroBatch], lr: float,
               global_targets: int | None = None) -> tuple[float, list[tuple[float, int]], float]:
    """One optimizer step over this rank's micro-batches.

    Returns (global loss sum / global target tokens, [(loss sum, tokens)] per domain over all
    ranks, grad norm). `global_targets`: the step's target tokens over all ranks when the caller
    knows them (every rank draws the whole global batch, and packed rows mask nothing, so each
    row has seq_len - 1 targets); None = all-reduced here before forward. Then one all-reduce of
    the per-domain sums after backward and one host read per step; none per micro-batch.
    """
    device, world = strategy.s.device, strategy.s.world_size
    num_domains = batches[0].request.num_domains
    counts = torch.tensor([sum(b.targets_by_domain[d] for b in batches) for d in range(num_domains)], dtype=torch.float64)
    if global_targets is None:
        global_targets = strategy.all_reduce_sum(counts.sum().reshape(1))[0]  # known before forward
    scale = (world / torch.as_tensor(global_targets, dtype=torch.float64)).float()
    sums = torch.zeros(num_domains, dtype=torch.float64, device=device)
    for k, batch in enumerate(batches):
        sums += strategy.forward_backward(batch, last=k == len(batches) - 1, scale=scale).to(torch.float64)
    grad_norm = strategy.step(lr)  # 0-d, on the device: read below with the sums
    stats = strategy.all_reduce_sum(torch.stack([sums, counts.to(device)], dim=1))
    read = torch.cat([stats.flatten(), grad_norm.to(stats.device, torch.float64).reshape(1)]).tolist()  # the step's one host read
    stats, grad_norm = [tuple(read[i : i + 2]) for i in range(0, 2 * num_domains, 2)], read[-1]
    total_loss, total_tokens = sum(s for s, _ in stats), sum(n for _, n in stats)
    assert total_tokens == float(global_targets), f"targets counted {total_tokens} != {float(global_targets)} scaled by"
    return total_loss / total_tokens, [(s, int(n)) for s, n in stats], grad_norm


def train(strategy: Strategy, datasets: dict[str, PackedDataset], sampler: MixingSampler, plan: LoopPlan,
          state: TrainState, hooks: Hooks, resume_dir: Path | None = None) -> TrainState:
    """Run every stage from `state.step` on; returns the final state."""
    module = strategy.module
    adapted = is_adapted(module)  # LoRA: stages train adapters and new rows (kopretrain/train/adapters.py)
    embedding_names = [] if adapted else embedding_param_names(module)
    split = geometry(plan.num_sequences_per_step, plan.micro_batch_sizes or [plan.micro_batch_size] * plan.world_size)
    for stage, (first, end) in zip(plan.stages, stage_bounds(plan.stages)):
        if state.step >= end:
            continue  # finished before the checkpoint we resumed from
        if adapted:
            stage_plan = plan_adapter_stage(module, stage.trainable, plan.weight_decay)
        else:
            stage_plan = plan_stage(module, stage.trainable, embedding_names, plan.num_base_rows, plan.weight_decay)
        num_trainable = stage_plan.apply(module)
        strategy.start_stage(stage_plan.param_groups(module), stage_plan.freeze)
        if resume_dir is not None:
            strategy.load(resume_dir, with_optimizer=state.step > first)
            resume_dir = None
        peak_lr = stage.lr or plan.lr
        if state.step == 0 and hasattr(hooks, "on_start"):  # the untrained model, its stage set up (eval.at_end's base)
            hooks.on_start(state)
        for step in range(state.step, end):
            started = time.perf_counter()
            drawn = sampler.next_batch(plan.num_sequences_per_step)  # the global batch, the same on every rank
            batches = micro_batches(split.take(drawn, plan.rank), datasets, split.micro_batch_sizes[plan.rank],
                                    strategy.s.device, sampler.domains)
            global_targets = sum(datasets[d].seq_len - 1 for d, _ in drawn)  # packed rows: every next token a target
            lr = lr_at(step - first, num_steps=stage.num_steps, peak_lr=peak_lr, warmup_steps=plan.lr_warmup_steps,
                       schedule=plan.lr_schedule, min_ratio=plan.lr_min_ratio, warmup_start=plan.lr_warmup_start,
                       decay_fraction=plan.lr_decay_fraction, decay_shape=plan.lr_decay_shape)
            loss, by_domain, grad_norm = train_step(strategy, batches, lr, global_targets)
            state.train_seconds += time.perf_counter() - started
            state.step = step + 1
            state.sampler = sampler.state_dict()
            record = {"step": state.step, "stage": stage.name, "loss": loss,
                      "loss_by_domain": {d: s / n for d, (s, n) in zip(sampler.domains, by_domain) if n},
                      "lr": lr, "grad_norm": grad_norm, "tokens": sum(sampler.tokens_drawn().values())}
            state.losses.append(record)
            if state.step == end:
                state.stages.append({"name": stage.name, "trainable": stage.trainable, "first_step": first + 1,
                                     "last_step": end, "peak_lr": peak_lr, "num_trainable_params": num_trainable,
                                     "final_loss": loss})
            hooks.on_step(state, record)
            every = plan.checkpoint_every_num_steps
            if state.step == end or (every and state.step % every == 0):
                hooks.save_checkpoint(state)
    return state
