"""Schema of `peft=lora` (conf/peft/): LoRA adapters and the new vocabulary's rows instead of full
training, part of `kopretrain train`'s TrainConfig (the cross-checks against the model and the
strategy are in TrainConfig.__post_init__). No torch, no peft: kopretrain/train/adapters.py uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kopretrain.config.common import require, require_choice

PEFT_METHODS = ("none", "lora")
PEFT_EXPORTS = ("merged", "adapter", "both")
PEFT_STRATEGIES = ("local", "ddp", "fsdp", "deepspeed_zero2")
"""Strategies LoRA runs with (tested on CPU); ZeRO-3 (which partitions the rows peft writes into) is refused."""


@dataclass
class PeftConfig:
    """Parameter-efficient training (peft=lora): LoRA adapters + the new vocabulary's rows, base frozen."""

    method: str = "none"
    """none (train the model itself) or lora (adapters through the peft library)."""
    r: int = 16
    """LoRA rank."""
    alpha: float = 32.0
    """LoRA alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=list)
    """Linear modules to adapt ([] = every linear of a decoder layer, by model_type: kopretrain/train/adapters.py)."""
    train_new_rows: bool = True
    """Train the embedding and output rows of the expanded vocabulary fully (base rows stay frozen)."""
    export: str = "merged"
    """merged (a plain HF model), adapter (model/adapter: peft's adapter files + the new rows) or both."""

    def __post_init__(self):
        require_choice(self.method, PEFT_METHODS, "method")
        require(self.r >= 1, "r", "must be >= 1")
        require(self.alpha > 0, "alpha", "must be > 0")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        require_choice(self.export, PEFT_EXPORTS, "export")
