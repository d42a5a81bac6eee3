"""The optimizer factory: `optim.name` -> a torch optimizer over a stage's parameter groups.

    optimizer = make_optimizer("adamw_8bit", param_groups, betas=(0.9, 0.95), eps=1e-8)

The name table is `kopretrain.registry.OPTIMIZERS` (torch-free, so the config checks names in
a second); every strategy, DeepSpeed's included, calls `make_optimizer` at every stage start, so
a new entry in the table (name -> factory(param_groups, betas, eps)) plugs in without touching the
loop or the strategies (tests/train/test_optimizers.py). Under DeepSpeed ZeRO the optimizer's state
is sharded or offloaded by the engine (`strategy.offload_optimizer`); adamw_8bit is refused there.

- `adamw`: torch.optim.AdamW (foreach=False: the same arithmetic on every strategy), fp32 moments,
  8 bytes of state per trained parameter.
- `adamw_8bit`: bitsandbytes `AdamW8bit`, block-wise 8-bit moments, 2 bytes per trained
  parameter (tensors under 4,096 elements keep fp32 moments, bitsandbytes' `min_8bit_size`).
  bitsandbytes is an optional dependency (`pip install -e .[lowmem]`); its 0.50 release has a
  CPU backend, so the option also runs (slowly) on CPU workers, which is how the tests check it.
  Missing, it is a one-line error before Ray starts (`check_available`).
Pure torch: no Ray.
"""

from __future__ import annotations

import importlib.util

import torch

from kopretrain.errors import UserError
from kopretrain.registry import OPTIMIZERS, load


def adamw(param_groups: list[dict], betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups, lr=0.0, betas=betas, eps=eps, foreach=False)


def adamw_8bit(param_groups: list[dict], betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(param_groups, lr=0.0, betas=betas, eps=eps)


def check_available(name: str) -> None:
    """A one-line UserError when the optimizer's library is not installed (driver, before Ray)."""
    if name == "adamw_8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("optim.name: adamw_8bit needs bitsandbytes (pip install 'kopretrain[lowmem]' or bitsandbytes==0.50.2)")


def make_optimizer(name: str, param_groups: list[dict], betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """A fresh optimizer (learning rate 0: the loop sets it every step)."""
    return load(OPTIMIZERS, name)(param_groups, betas=betas, eps=eps)
