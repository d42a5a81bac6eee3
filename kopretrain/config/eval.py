"""Schema of `kopretrain eval` (conf/eval.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kopretrain.config.common import TrackingConfig, require
from kopretrain.config.data_stages import SourceConfig
from kopretrain.errors import ConfigError

# The shortest window bpc can score: `context_overlap` is capped at max_len // 2 tokens of
# context, and a window needs them, its first (input-only) token and at least one scored token:
# overlap < max_len - 1 holds for every max_len >= 3 (see kopretrain/eval/bpc.py `_windows`).
MIN_MAX_LEN = 3
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


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
    """Domain -> held-out file, directory or glob, in any format `prepare` reads (.txt a document per line, .jsonl, .csv/.tsv, .parquet; .gz/.zst)."""
    heldout_format: str = "auto"
    """Format of the held-out files, as prepare's source `format`: auto (by extension) | jsonl | parquet | txt | txt_file | csv | tsv."""
    heldout_text_field: str = "text"
    """JSON key / CSV or parquet column holding the text in the held-out files ('Q,A' joins several with a newline)."""
    heldout_encoding: str = "utf-8"
    """Text encoding of the held-out files (utf-8, cp949, euc-kr, ...); lines that do not decode are skipped and reported."""
    max_docs_per_domain: int = 0
    """Score at most this many documents per domain (0 = all)."""
    max_len: int = 0
    """Window length in tokens (0 = the model's max_position_embeddings; at least 3, at most the model's context)."""
    batch_size: int = 8
    """Windows per forward pass."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N' (checked against the machine before loading)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking."""

    def __post_init__(self):
        require(bool(self.model_dir), "model_dir", "set the model directory to evaluate, e.g. model_dir=outputs/train/.../model")
        require(bool(self.heldout), "heldout", "give at least one domain=path")
        require(self.max_docs_per_domain >= 0, "max_docs_per_domain", "must be >= 0")
        require(self.max_len == 0 or self.max_len >= MIN_MAX_LEN, "max_len",
                f"{self.max_len} is too short to score a window (0 = the model's context, else >= {MIN_MAX_LEN})")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
        require(bool(DEVICE.fullmatch(self.device)), "device", f"{self.device!r} is not one of auto, cpu, cuda, cuda:N")
        try:  # the rest of the read settings are checked by prepare's own source schema
            SourceConfig(name="heldout", path="heldout", domain="heldout", format=self.heldout_format,
                         text_field=self.heldout_text_field, encoding=self.heldout_encoding)
        except ConfigError as e:
            raise ConfigError(f"heldout_{e.key}", e.message) from None
