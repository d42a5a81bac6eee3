"""Schema of `kopretrain eval` (conf/eval.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kopretrain.config.common import TrackingConfig, require


@dataclass
class EvalConfig:
    """Bits per character of a model (and optionally its base) on held-out text per domain."""

    model_dir: str = ""
    """HF model directory to evaluate (a `train` run's `model/`)."""
    tokenizer_dir: str = ""
    """Tokenizer directory ('' = the model directory)."""
    base_model_dir: str = ""
    """Optional base model directory: its bpc is measured too and the change reported (forgetting)."""
    base_tokenizer_dir: str = ""
    """Tokenizer of the base model ('' = the base model directory)."""
    heldout: dict[str, str] = field(default_factory=lambda: {"ko": "data/heldout/ko.txt", "en": "data/heldout/en.txt"})
    """Domain -> held-out text file (.txt one document per line, or .jsonl with a `text` field)."""
    max_docs_per_domain: int = 0
    """Score at most this many documents per domain (0 = all)."""
    max_len: int = 0
    """Window length in tokens (0 = the model's max_position_embeddings)."""
    batch_size: int = 8
    """Windows per forward pass."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking."""

    def __post_init__(self):
        require(bool(self.model_dir), "model_dir", "set the model directory to evaluate, e.g. model_dir=outputs/train/.../model")
        require(bool(self.heldout), "heldout", "give at least one domain=path")
        require(self.max_docs_per_domain >= 0, "max_docs_per_domain", "must be >= 0")
        require(self.max_len >= 0, "max_len", "must be >= 0")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(self.device in ("auto", "cpu", "cuda"), "device", f"{self.device!r} is not one of auto, cpu, cuda")
