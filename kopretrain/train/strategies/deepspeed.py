"""`strategy=deepspeed_zero2|deepspeed_zero3`: DeepSpeed ZeRO (stage 2: gradients and optimizer
state sharded; stage 3: parameters too), on the process group Ray Train already set up.

The engine owns accumulation and clipping: `engine.backward` divides the loss by the
accumulation steps itself (so the loss goes in unscaled), `engine.step()` is called after
every micro-batch and only updates at the accumulation boundary. The optimizer comes from the
same factory as the other strategies' (`make_optimizer`, kopretrain/train/optimizers.py: torch
AdamW, `zero_allow_untested_optimizer`), the same math and usable on CPU, where DeepSpeed's
fused Adam does not build; bf16 on GPU. The config refuses adamw_8bit with ZeRO in one line
(not tested under ZeRO's flattened partitions; strategy.offload_optimizer=true saves the
optimizer's device memory there instead).

- Stages: each stage gets a fresh engine (and optimizer) over its trainable parameters, the
  previous engine destroyed. ZeRO-3 runs one stage only (`supports_multiple_stages`): a second
  engine over parameters the first one partitioned trains, but measurably differently from
  FSDP2/DDP/ZeRO-2 (the embeddings miss their weight decay), so the driver refuses it.
- Frozen rows: a gradient hook on the embedding parameters zeroes the base rows before
  DeepSpeed reduces and partitions the gradient.
- Checkpoints: `engine.save_checkpoint` (each rank its own partitions, Ray merges the
  directories) and `load_checkpoint`. Export: ZeRO-2 holds full parameters on every rank;
  ZeRO-3 gathers them layer by layer to rank 0; under bf16 the trained parameters come from
  the optimizer's fp32 master weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kopretrain.train.strategies.base import RowFreeze, Strategy

TAG = "engine"


class DeepSpeedStrategy(Strategy):
    """DeepSpeed ZeRO; `zero_stage` set by the subclasses."""

    zero_stage = 2
    supports_multiple_stages = True

    def __init__(self, settings):
        super().__init__(settings)
        self.engine = None
        self._hooks: list = []

    def wrap(self, model: torch.nn.Module) -> None:
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if self.s.device.type == "cuda" else "gloo")
        self.module = model.to(self.s.device)

    def build(self, plan, seed: int, prepare=None) -> dict:
        """ZeRO-3: built partitioned (`deepspeed.zero.Init`), then filled one gathered parameter at a time
        from rank 0 (kopretrain/train/model_init.py); ZeRO-2 keeps a full replica: base.Strategy.build."""
        from kopretrain.train import model_init
        from kopretrain.train.host_memory import compact_host_memory

        ckpt = model_init.sharded_checkpoint(plan)[0] if self.zero_stage == 3 else None
        if ckpt is None:
            return super().build(plan, seed, prepare)
        import deepspeed
        from transformers import AutoModelForCausalLM

        deepspeed.init_distributed(dist_backend="nccl" if self.s.device.type == "cuda" else "gloo")
        os.environ.setdefault("LOCAL_RANK", str(self.s.device.index or 0))  # zero.Init reads it (Ray Train sets it)
        with compact_host_memory():
            with deepspeed.zero.Init(config_dict_or_path=self._config()):
                model = AutoModelForCausalLM.from_config(model_init.model_config(plan), dtype=torch.float32)
            model_init.finish(model, plan)
            model_init.load_weights_zero3(model, ckpt, plan, self.s.rank)
        if prepare is not None:
            prepare(model)
        self.module = self.model = model
        return model_init.build_info(model, plan, "partitioned")

    def _config(self) -> dict:
        zero: dict = {"stage": self.zero_stage}
        if self.zero_stage == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        if self.s.offload_optimizer:  # optimizer state and step in CPU memory; torch AdamW runs there
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": self.s.device.type == "cuda"}
        if self.s.offload_params:  # ZeRO-3 only (the config refuses it elsewhere): parameter partitions in CPU memory
            assert self.zero_stage == 3, "offload_param is a ZeRO-3 option"
            zero["offload_param"] = {"device": "cpu", "pin_memory": self.s.device.type == "cuda"}
        return {
            "train_micro_batch_size_per_gpu": self.s.micro_batch_size,
            "gradient_accumulation_steps": self.s.num_accumulation_steps,
            "train_batch_size": self.s.micro_batch_size * self.s.num_accumulation_steps * self.s.world_size,
            "gradient_clipping": self.s.max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": self.s.autocast_dtype == torch.bfloat16},
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,  # offload with torch AdamW (DeepSpeedCPUAdam needs a compiler)
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }

    def start_stage(self, param_groups: list[dict], freeze: RowFreeze) -> None:
        import deepspeed

        for handle in self._hooks:
            handle.remove()
        if self.engine is not None:
            self.engine.destroy()  # the previous stage's gradient hooks must not fire any more
        self.freeze = freeze
        from kopretrain.train.optimizers import make_optimizer

        optimizer = make_optimizer(self.s.optimizer, param_groups, betas=self.s.betas, eps=self.s.eps)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=self.module, optimizer=optimizer, config=self._config())
        self.model = self.engine
        if self.zero_stage == 3 and not getattr(self, "_lm_head_registered", False):
            self._register_output_weight()  # before any forward (an eval before step 1 too): ZeRO-3 traces the first
        named = dict(self.module.named_parameters())
        self._hooks = [named[n].register_hook(self._zero_rows_hook) for n in freeze.param_names] if freeze.num_base_rows else []

    def _zero_rows_hook(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[: self.freeze.num_base_rows] = 0
        return grad

    def forward_backward(self, batch, last: bool, scale=None) -> torch.Tensor:
        """As base.Strategy's; `engine.backward(..., scale_wrt_gas=False)`: the loop's scale already
        divides by the step's global tokens (x world size: ZeRO averages gradients over ranks)."""
        from kopretrain.train.strategies.base import as_micro_batch

        batch = as_micro_batch(batch)
        scale = 1.0 / batch.num_targets if scale is None else scale
        out = self._loss_output(batch, self.engine)
        self.engine.backward(out.loss * scale, scale_wrt_gas=False)
        if not last:
            self.engine.step()  # not a boundary: DeepSpeed only counts the micro-step
        return out.by_domain

    def _register_output_weight(self) -> None:
        """ZeRO-3 gathers a parameter for the module whose forward runs; the loss reads lm_head's
        weight inside the causal LM's forward, not lm_head's: register it there."""
        from deepspeed.runtime.zero.partition_parameters import register_external_parameter

        from kopretrain.train.loss import causal_lm

        lm = causal_lm(self.module)
        lm_head = lm.get_output_embeddings()
        base = getattr(lm_head, "token_adapter", None)
        register_external_parameter(lm, (base.base_layer if base is not None else lm_head).weight)
        self._lm_head_registered = True

    def step(self, lr: float) -> torch.Tensor:
        assert self.engine.is_gradient_accumulation_boundary()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.engine.step()
        norm = self.engine.get_global_grad_norm()  # a float or a tensor, depending on the ZeRO stage
        return torch.as_tensor(0.0 if norm is None else norm, dtype=torch.float32).detach()

    # ------------------------------------------------------------ state
    def save(self, directory: Path) -> None:
        self.engine.save_checkpoint(str(directory / "deepspeed"), tag=TAG)

    def load(self, directory: Path, with_optimizer: bool) -> None:
        self.engine.load_checkpoint(
            str(directory / "deepspeed"), tag=TAG, load_optimizer_states=with_optimizer, load_lr_scheduler_states=False
        )

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The unsharded weights on rank 0 (None elsewhere); collective under ZeRO-3.

        With bf16 the module holds bf16 copies and the optimizer the fp32 master weights: every
        trained parameter is exported from its fp32 master (DeepSpeed's
        `safe_get_full_fp32_param`, an all-gather under ZeRO-3), so the export is the full fp32
        state, not a bf16 rounding of it. Parameters no optimizer holds (frozen ones) keep the
        module's value.
        """
        if self.zero_stage == 3:
            sd = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            sd = self.module.state_dict() if self.s.rank == 0 else None
        masters = self._fp32_masters() if self.s.autocast_dtype == torch.bfloat16 else {}
        if self.s.rank != 0:
            return None
        out = {k: v.detach().to("cpu") for k, v in sd.items()}
        for name in out.keys() & masters.keys():
            out[name] = masters[name]
        return out

    def _fp32_masters(self) -> dict[str, torch.Tensor]:
        """Parameter name (every alias of a tied parameter) -> its fp32 master weight, on rank 0."""
        from deepspeed.utils import safe_get_full_fp32_param

        by_param: dict[int, torch.Tensor | None] = {}
        masters: dict[str, torch.Tensor] = {}
        for name, param in self.module.named_parameters(remove_duplicate=False):
            if id(param) not in by_param:  # the same order on every rank: ZeRO-3 all-gathers here
                full = safe_get_full_fp32_param(param)
                by_param[id(param)] = None if full is None else full.detach().float().to("cpu")
            if by_param[id(param)] is not None:
                masters[name] = by_param[id(param)]
        return masters


class DeepSpeedZero2Strategy(DeepSpeedStrategy):
    name = "deepspeed_zero2"
    zero_stage = 2


class DeepSpeedZero3Strategy(DeepSpeedStrategy):
    name = "deepspeed_zero3"
    zero_stage = 3
    supports_multiple_stages = False

