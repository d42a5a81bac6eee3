"""The strategies that distribute the model; the name table is `kopretrain.registry.STRATEGIES`.

    strategy_class("fsdp") -> FSDPStrategy

The table lives in the torch-free registry so that config validation reads its keys without
importing torch or DeepSpeed; `strategy_class` imports the chosen one. Every strategy
implements the interface in `base.Strategy`; the training loop only talks to that interface.
"""

from __future__ import annotations

from kopretrain.registry import STRATEGIES, load

__all__ = ["STRATEGIES", "strategy_class"]


def strategy_class(name: str) -> type:
    return load(STRATEGIES, name)
