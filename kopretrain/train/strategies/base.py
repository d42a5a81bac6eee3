"""The interface every strategy implements, and the plain-torch behaviour local and DDP share.

The training loop (kopretrain/train/loop.py) only calls these methods:

    info = strategy.build(plan, seed)           # once: build, shard (FSDP2, ZeRO-3) and load the model
    strategy.wrap(model)                        # or: a model built already (tests): move to device, shard
    strategy.start_stage(param_groups, rows)    # per stage: optimizer (+ DDP wrapper / DeepSpeed engine)
    sums = strategy.forward_backward(mb, last, scale)  # per micro-batch; `last` = sync gradients now
    norm = strategy.step(lr)                    # per optimizer step: mask rows, clip, step, zero
    strategy.save(dir) / strategy.load(dir, with_optimizer)   # collective, for exact resume
    state = strategy.full_state_dict()         # collective; the unsharded weights on rank 0

The loss (kopretrain/train/loss.py) is a sum over target tokens, per domain; `forward_backward`
backpropagates `loss_sum * scale`, where the loop passes scale = world_size / (the step's global
number of target tokens): DDP and FSDP2 average gradients over ranks, so the pre-scale by
world_size makes the reduced gradient that of (global loss sum) / (global tokens), whatever
the ranks' micro-batch sizes. Strategies keep only the no-sync / engine plumbing.

`RowFreeze` says which embedding rows a `new_embeddings` stage must not move: their gradients
are zeroed before the optimizer step (by global row index; FSDP2 maps it onto each shard).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from kopretrain.train.stages import RowFreeze  # noqa: F401 (re-exported: the strategies' interface)


@dataclass
class StrategySettings:
    """What a strategy needs to know besides the model (built by the worker from TrainConfig)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    num_accumulation_steps: int = 1
    micro_batch_size: int = 1
    autocast_dtype: torch.dtype | None = None  # bf16 on GPU; None = full fp32
    max_grad_norm: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    reshard_after_forward: bool = True
    optimizer: str = "adamw"  # kopretrain.registry.OPTIMIZERS key
    offload_optimizer: bool = False  # DeepSpeed ZeRO: optimizer state in CPU memory
    loss: str = "chunked"  # kopretrain.registry.LOSSES key
    loss_chunk_size: int = 0  # positions per chunk of the chunked loss (0 = auto)
    offload_params: bool = False  # FSDP2 CPUOffloadPolicy / DeepSpeed ZeRO-3 offload_param
    hsdp_replicate_degree: int = 1  # FSDP2: replicas of the sharded model (HSDP); 1 = plain FSDP


def as_micro_batch(batch):
    """A MicroBatch as is; an input_ids tensor as a one-domain MicroBatch."""
    from kopretrain.train.loss import MicroBatch

    return batch if isinstance(batch, MicroBatch) else MicroBatch.of(batch)


class Strategy:
    """Plain torch on one device; subclasses change wrapping, syncing and state handling."""

    name = "local"
    supports_multiple_stages = True  # a fresh optimizer per stage over the same wrapped model

    def __init__(self, settings: StrategySettings):
        self.s = settings
        self.module: torch.nn.Module | None = None  # the unwrapped model (FQNs as in HF)
        self.model: torch.nn.Module | None = None  # what forward is called on
        self.optimizer: torch.optim.Optimizer | None = None
        self.freeze = RowFreeze()

    # ------------------------------------------------------------ setup
    def wrap(self, model: torch.nn.Module) -> None:
        self.module = self.model = model.to(self.s.device)

    def build(self, plan, seed: int, prepare=None) -> dict:
        """Build and load the model the way this strategy holds it; returns build_model's info (+ "load").

        A pretrained safetensors checkpoint (kopretrain/train/model_init.py): the model on the meta
        device, placed by `_place` (here: allocated on the device, no host copy; FSDP2: sharded
        first), then each rank reads only what it holds, new vocabulary rows included (a .bin checkpoint:
        from the driver's conversion, train/convert_bin.py; LoRA: the peft model, adapters seeded by `seed`,
        train/model_init_lora.py). Otherwise (from-scratch, an unconverted .bin): the full model per rank
        (build_model), then `wrap`.
        `prepare(model)`, if given, runs on the unwrapped model just before it is wrapped (e.g. compile).
        """
        from kopretrain.train import model_init
        from kopretrain.train.host_memory import compact_host_memory

        ckpt, why = model_init.sharded_checkpoint(plan)
        if ckpt is None:
            from kopretrain.train.model import build_model

            model, info = build_model(plan, seed)
            if prepare is not None:
                prepare(model)
            self.wrap(model)
            return {**info, "load": f"full ({why})"}
        with compact_host_memory():
            model = model_init.meta_model(plan, adapted=True)
            if prepare is not None:
                prepare(model)
            self._place(model)
            model_init.load_weights(model, ckpt, plan, seed)
        return model_init.build_info(model, plan, "in place")

    def _place(self, model: torch.nn.Module) -> None:
        """A meta-device model: allocate it on the device, then wrap it."""
        from kopretrain.train.model_init import materialize

        materialize(model, self.s.device)
        self.wrap(model)

    def start_stage(self, param_groups: list[dict], freeze: RowFreeze) -> None:
        """A fresh optimizer (optim.name) over `param_groups` ({"params": [...], "weight_decay": x}) for a new stage."""
        from kopretrain.train.optimizers import make_optimizer

        self.freeze = freeze
        self.optimizer = make_optimizer(self.s.optimizer, param_groups, betas=self.s.betas, eps=self.s.eps)

    # ------------------------------------------------------------ one step
    def _no_sync(self, last: bool):
        return contextlib.nullcontext()

    def _autocast(self):
        if self.s.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.s.device.type, dtype=self.s.autocast_dtype)

    def _loss_output(self, batch, call):
        """`call(**inputs)` on the loss-patched model (installed on first use): a LossOutput."""
        from kopretrain.train.loss import LossOutput, install_loss

        install_loss(self.module, self.s.loss, self.s.loss_chunk_size)
        out = call(input_ids=batch.input_ids, loss_request=batch.request)
        assert isinstance(out, LossOutput), type(out)
        return out

    def forward_backward(self, batch, last: bool, scale=None) -> torch.Tensor:
        """Backward of (summed loss x scale) of one micro-batch; returns its loss sums per domain (detached).

        `batch`: a kopretrain.train.loss.MicroBatch, or an input_ids tensor (one domain). `scale`:
        a number or 0-d device tensor; None = 1 / the batch's target tokens (its mean loss).
        """
        batch = as_micro_batch(batch)
        scale = 1.0 / batch.num_targets if scale is None else scale
        with self._no_sync(last):
            with self._autocast():
                out = self._loss_output(batch, self.model)
            (out.loss * scale).backward()
        return out.by_domain

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _zero_frozen_rows(self) -> None:
        named = dict(self.module.named_parameters())
        for name in self.freeze.param_names:
            grad = named[name].grad
            if grad is not None:
                grad[: self.freeze.num_base_rows].zero_()

    def step(self, lr: float) -> torch.Tensor:
        """Optimizer step at learning rate `lr`; returns the global gradient norm before clipping.

        The norm is a 0-d tensor on this rank's device, not read on the host here (`float()` it:
        one host sync), so that the optimizer's kernels queue behind backward without a wait;
        the loop reads it together with the step's loss sums.
        """
        if self.freeze.num_base_rows:
            self._zero_frozen_rows()
        norm = self._clip(self._trainable())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _clip(self, params: list[torch.nn.Parameter]) -> torch.Tensor:
        max_norm = self.s.max_grad_norm if self.s.max_grad_norm > 0 else float("inf")
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False).detach()

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of a tensor over ranks, on this rank's device (no host sync)."""
        value = value.detach().to(self.s.device).clone()
        if self.s.world_size > 1:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    # ------------------------------------------------------------ state
    def save(self, directory: Path) -> None:
        """Model and optimizer state; replicated, so rank 0 writes it."""
        if self.s.rank == 0:
            torch.save(self.module.state_dict(), directory / "model.pt")
            torch.save(self.optimizer.state_dict(), directory / "optimizer.pt")

    def load(self, directory: Path, with_optimizer: bool) -> None:
        self.module.load_state_dict(torch.load(directory / "model.pt", map_location=self.s.device, weights_only=True))
        if with_optimizer:
            self.optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location=self.s.device, weights_only=True))

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        if self.s.rank != 0:
            return None
        return {k: v.detach().to("cpu") for k, v in self.module.state_dict().items()}
