"""Schema of `kopretrain demo` (conf/demo.yaml): the whole loop on the shipped sample.

The demo has no pretrained weights and no internet, so it makes its own small English base
and then does to it what a user does to a real one (see kopretrain/demo.py for the steps).
Its defaults are the calibrated toy scale from ../shared/README.md, shortened to fit about
ten minutes on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kopretrain.config.common import RayConfig, TrackingConfig, require
from kopretrain.config.data_stages import SourceConfig
from kopretrain.config.train import StrategyConfig


def _tiny_llama() -> dict[str, Any]:
    return {
        "model_type": "llama", "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    }


@dataclass
class DemoTrainConfig:
    """One training run of the demo (the base, or each continual-pretraining run)."""

    num_steps: int = 100
    """Optimizer steps."""
    lr: float = 1e-3
    """Peak learning rate (cosine decay after warmup)."""
    lr_warmup_steps: int = 10
    """Linear warmup steps."""
    num_sequences_per_step: int = 16
    """Global batch in sequences of seq_len tokens."""
    micro_batch_size: int = 8
    """Sequences per forward/backward on one worker."""

    def __post_init__(self):
        require(self.num_steps >= 1, "num_steps", "must be >= 1")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.lr_warmup_steps >= 0, "lr_warmup_steps", "must be >= 0")
        require(self.num_sequences_per_step >= 1, "num_sequences_per_step", "must be >= 1")
        require(self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1")


@dataclass
class DemoConfig:
    """prepare -> English base (tokenizer + tiny Llama) -> Korean expansion -> replay sweep -> eval."""

    sources: list[SourceConfig] = field(default_factory=list)
    """Raw corpora (default: the shipped sample, conf/source/sample.yaml); domains `ko` and `en` are used."""
    work_dir: str = ""
    """Where every step writes ('' = the run directory)."""
    seed: int = 0
    """Seed of model init, sampling and data order."""
    seq_len: int = 128
    """Tokens per packed training sequence (and the model's context)."""
    base_vocab_size: int = 4000
    """Pieces of the English base SentencePiece BPE (byte fallback)."""
    korean_vocab_size: int = 6000
    """Pieces of the Korean SentencePiece BPE whose Hangul pieces expand the base."""
    num_new_tokens: int = 6000
    """At most this many Korean tokens are added (only pieces with Hangul qualify)."""
    model_arch: dict[str, Any] = field(default_factory=_tiny_llama)
    """HF config of the base model built from scratch (vocab_size comes from the tokenizer)."""
    base_train: DemoTrainConfig = field(default_factory=lambda: DemoTrainConfig(num_steps=300, lr=2e-3))
    """Pretraining of the English base."""
    cpt_train: DemoTrainConfig = field(default_factory=lambda: DemoTrainConfig(num_steps=200, lr=1e-3))
    """Each continual-pretraining run of the sweep."""
    replay_ratios: list[float] = field(default_factory=lambda: [0.0, 0.2])
    """English replay shares swept with a Hydra multirun of `kopretrain train`."""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """Training strategy of every run, as in `kopretrain train`: strategy=ddp, strategy.name=local (one worker)."""
    num_workers: int = 2
    """Ray Train workers of every run."""
    heldout: dict[str, str] = field(default_factory=lambda: {"ko": "data/heldout/ko.txt", "en": "data/heldout/en.txt"})
    """Domain -> held-out text scored in bits per character."""
    max_heldout_docs: int = 400
    """Documents per held-out domain (0 = all)."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray: a private local instance unless an address is given."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow: one parent run for the demo, a child run per step."""

    def __post_init__(self):
        require(len(self.sources) > 0, "sources", "give at least one source (default: source=sample)")
        domains = {s.domain for s in self.sources}
        require({"ko", "en"} <= domains, "sources", f"need domains ko and en (got {sorted(domains)})")
        require(self.seq_len >= 8, "seq_len", "must be >= 8")
        require(self.base_vocab_size >= 64, "base_vocab_size", "must be >= 64")
        require(self.korean_vocab_size >= 64, "korean_vocab_size", "must be >= 64")
        require(self.num_new_tokens >= 1, "num_new_tokens", "must be >= 1")
        require(self.model_arch.get("model_type") is not None, "model_arch", "needs model_type (e.g. llama)")
        require(len(self.replay_ratios) >= 1, "replay_ratios", "give at least one ratio")
        require(all(0.0 <= r <= 1.0 for r in self.replay_ratios), "replay_ratios", "each must be in [0, 1]")
        require(self.num_workers >= 1, "num_workers", "must be >= 1")
        require(set(self.heldout) >= {"ko", "en"}, "heldout", "needs ko and en")
        require(self.max_heldout_docs >= 0, "max_heldout_docs", "must be >= 0")
