"""Name tables for what configs choose by name, without importing what the names stand for.

Configs (`kopretrain/config/*`) validate `strategy.name=...` against these keys in about a second
and import neither torch nor DeepSpeed to do it; the code that runs imports the chosen entry
with `load`. Values are (module, attribute).

    STRATEGIES["fsdp"] -> ("kopretrain.train.strategies.fsdp", "FSDPStrategy")
    load(STRATEGIES, "fsdp") -> the FSDPStrategy class (imports torch)

Imports nothing from kopretrain but the standard library (a test holds it to that).
"""

from __future__ import annotations

import importlib
from typing import Any

STRATEGIES: dict[str, tuple[str, str]] = {
    "local": ("kopretrain.train.strategies.local", "LocalStrategy"),  # one process, no wrapper
    "ddp": ("kopretrain.train.strategies.ddp", "DDPStrategy"),  # replicated model, all-reduced grads
    "fsdp": ("kopretrain.train.strategies.fsdp", "FSDPStrategy"),  # FSDP2 fully_shard per decoder layer
    "deepspeed_zero2": ("kopretrain.train.strategies.deepspeed", "DeepSpeedZero2Strategy"),  # sharded grads + optimizer
    "deepspeed_zero3": ("kopretrain.train.strategies.deepspeed", "DeepSpeedZero3Strategy"),  # + sharded parameters
}
"""strategy.name -> the class that distributes the model (interface: kopretrain.train.strategies.base.Strategy)."""

OPTIMIZERS: dict[str, tuple[str, str]] = {
    "adamw": ("kopretrain.train.optimizers", "adamw"),  # torch.optim.AdamW, fp32 moments
    "adamw_8bit": ("kopretrain.train.optimizers", "adamw_8bit"),  # bitsandbytes AdamW8bit, 8-bit moments
}
"""optim.name -> the factory (param_groups, betas, eps) -> optimizer (kopretrain/train/optimizers.py)."""

LOSSES: dict[str, tuple[str, str]] = {
    "chunked": ("kopretrain.train.loss", "chunked_cross_entropy"),  # plain torch, chunks of positions, CPU+GPU
    "fused": ("kopretrain.train.loss", "fused_cross_entropy"),  # liger-kernel fused linear CE, GPU only
}
"""loss.name -> (hidden [N, H], weight [V, H], targets [N], softcap, chunk_size) -> summed CE (kopretrain/train/loss.py)."""

LOSS_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gpt_neox"})
"""HF model_types whose *ForCausalLM is decoder (`base_model_prefix`) + bias-free lm_head (+ softcap): the loss supports them."""


def load(table: dict[str, tuple[str, str]], name: str) -> Any:
    """Import and return the object that `name` stands for in `table`."""
    module, attr = table[name]
    return getattr(importlib.import_module(module), attr)
