"""The one table from `strategy.name` to the code that distributes the model.

    STRATEGIES["fsdp"] -> ("kopretrain.train.strategies.fsdp", "FSDPStrategy")

Values are (module, class) so that this table (and the config validation that reads its keys)
imports neither torch nor DeepSpeed; `build_strategy` imports the chosen one. Every strategy
implements the interface in `base.Strategy`; the training loop only talks to that interface.
"""

from __future__ import annotations

import importlib

STRATEGIES: dict[str, tuple[str, str]] = {
    "local": ("kopretrain.train.strategies.local", "LocalStrategy"),  # one process, no wrapper
    "ddp": ("kopretrain.train.strategies.ddp", "DDPStrategy"),  # replicated model, all-reduced grads
    "fsdp": ("kopretrain.train.strategies.fsdp", "FSDPStrategy"),  # FSDP2 fully_shard per decoder layer
    "deepspeed_zero2": ("kopretrain.train.strategies.deepspeed", "DeepSpeedZero2Strategy"),  # sharded grads + optimizer
    "deepspeed_zero3": ("kopretrain.train.strategies.deepspeed", "DeepSpeedZero3Strategy"),  # + sharded parameters
}


def strategy_class(name: str) -> type:
    module, cls = STRATEGIES[name]
    return getattr(importlib.import_module(module), cls)
