"""The training loop: plain torch, readable top to bottom, the same for every strategy.

    state = train(strategy, datasets, sampler, plan, TrainState(), hooks)

For each stage (kopretrain/train/stages.py): set what is trainable, give the strategy a fresh
optimizer, then for each step: draw the global batch from the mixing sampler, take this
rank's slice, run its micro-batches forward and backward, average the loss over ranks, and
take one optimizer step at the scheduled learning rate. `hooks` is how the outside world
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
from kopretrain.train.mixing import MixingSampler, shard_for_rank
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
    """One record per completed step: step, stage, loss, lr, grad_norm, tokens (cumulative)."""
    stages: list[dict] = field(default_factory=list)
    """Summaries of completed stages."""
    num_resumes: int = 0
    """Worker-group restarts this run survived (set on rank 0 by kopretrain/train/worker.py)."""
    train_seconds: float = 0.0
    """Wall time spent in training steps (not checkpoints), for tokens per second."""


class Hooks(Protocol):
    def on_step(self, state: TrainState, record: dict) -> None: ...
    def save_checkpoint(self, state: TrainState) -> None: ...


def stage_bounds(stages: list[StageSpec]) -> list[tuple[int, int]]:
    """[first step, end step) of each stage in global step numbers."""
    bounds, first = [], 0
    for stage in stages:
        bounds.append((first, first + stage.num_steps))
        first += stage.num_steps
    return bounds


def micro_batches(items: list[tuple[str, int]], datasets: dict[str, PackedDataset], size: int,
                  device: torch.device) -> list[torch.Tensor]:
    """This rank's sequences as [size, seq_len] int64 tensors."""
    out = []
    for i in range(0, len(items), size):
        rows = np.stack([datasets[d][j] for d, j in items[i : i + size]])
        out.append(torch.from_numpy(rows).to(device))
    return out


def train_step(strategy: Strategy, batches: list[torch.Tensor], lr: float) -> tuple[float, float]:
    """One optimizer step over this rank's micro-batches; returns (mean loss over ranks, grad norm)."""
    total = torch.zeros(())
    for k, input_ids in enumerate(batches):
        total += strategy.forward_backward(input_ids, last=k == len(batches) - 1).cpu()
    loss = strategy.reduce_mean(total / len(batches))
    grad_norm = strategy.step(lr)
    return loss, grad_norm


def train(strategy: Strategy, datasets: dict[str, PackedDataset], sampler: MixingSampler, plan: LoopPlan,
          state: TrainState, hooks: Hooks, resume_dir: Path | None = None) -> TrainState:
    """Run every stage from `state.step` on; returns the final state."""
    module = strategy.module
    adapted = is_adapted(module)  # LoRA: stages train adapters and new rows (kopretrain/train/adapters.py)
    embedding_names = [] if adapted else embedding_param_names(module)
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
        for step in range(state.step, end):
            started = time.perf_counter()
            mine = shard_for_rank(sampler.next_batch(plan.num_sequences_per_step), plan.rank, plan.world_size)
            batches = micro_batches(mine, datasets, plan.micro_batch_size, strategy.s.device)
            lr = lr_at(step - first, num_steps=stage.num_steps, peak_lr=peak_lr, warmup_steps=plan.lr_warmup_steps,
                       schedule=plan.lr_schedule, min_ratio=plan.lr_min_ratio, warmup_start=plan.lr_warmup_start,
                       decay_fraction=plan.lr_decay_fraction, decay_shape=plan.lr_decay_shape)
            loss, grad_norm = train_step(strategy, batches, lr)
            state.train_seconds += time.perf_counter() - started
            state.step = step + 1
            state.sampler = sampler.state_dict()
            record = {"step": state.step, "stage": stage.name, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                      "tokens": sum(sampler.tokens_drawn().values())}
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
