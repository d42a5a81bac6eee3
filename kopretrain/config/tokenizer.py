"""Schema of `kopretrain tokenizer` (conf/tokenizer.yaml): Korean vocabulary expansion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from kopretrain.config.common import TrackingConfig, require, require_choice

SPM_MODEL_TYPES = ("bpe", "unigram")
DEFAULT_NUM_NEW_TOKENS = 14_336
"""New tokens of a trained Korean model when num_new_tokens is null (Llama-2-ko added 14,336)."""
OUTPUT_INITS = ("mean", "first_piece")
"""Names of the lm_head init rules in `kopretrain.tokenizer.embeddings.OUTPUT_INITS`."""


@dataclass
class SampleConfig:
    """How documents are drawn from a corpus: a seeded reservoir sample, so memory stays bounded."""

    domain: str = "ko"
    """For a `prepare` output dir: keep clean rows of this domain."""
    text_fields: list[str] = field(default_factory=lambda: ["text", "review", "Q", "A", "sentence1", "sentence2"])
    """JSON fields / CSV-TSV columns read as text (each present one is a document); .txt files are one document per line."""
    num_sample_docs: int = 100_000
    """Documents kept (reservoir sample over the whole corpus; all of them when there are fewer)."""
    max_doc_chars: int = 4_096
    """Longer documents are cut to this many characters (the sample holds at most num_sample_docs x this)."""
    seed: int = 0
    """Seed of the reservoir sample."""

    def __post_init__(self):
        require(bool(self.domain), "domain", "must not be empty")
        require(len(self.text_fields) > 0, "text_fields", "give at least one field name")
        require(self.num_sample_docs >= 1, "num_sample_docs", "must be >= 1")
        require(self.max_doc_chars >= 16, "max_doc_chars", "must be >= 16")


@dataclass
class SpmTrainConfig:
    """SentencePiece training of the Korean model (its vocab_size is also the Korean BPE's for tokenizer.json bases)."""

    model_type: str = "bpe"
    """'bpe' or 'unigram' (SentencePiece bases only; tokenizer.json bases always get BPE)."""
    vocab_size: int = 16_000
    """Pieces of the Korean model; the new tokens are chosen from them."""
    character_coverage: float = 0.9995
    """Share of characters covered by pieces; the rarest rest become unknown / bytes."""
    byte_fallback: bool = True
    """Unknown characters become UTF-8 byte pieces instead of <unk>."""
    input_sentence_size: int = 1_000_000
    """At most this many sentences (lines of the sample) are loaded for training."""
    max_sentence_bytes: int = 4192
    """Longer sentences are skipped by the trainer."""
    num_threads: int = 2
    """Trainer threads."""
    seed: int = 0
    """SentencePiece's random seed (sentence shuffling)."""

    def __post_init__(self):
        require_choice(self.model_type, SPM_MODEL_TYPES, "model_type")
        require(self.vocab_size >= 64, "vocab_size", "must be >= 64")
        require(0.98 <= self.character_coverage <= 1.0, "character_coverage", "must be in [0.98, 1] (SentencePiece's range)")
        require(self.input_sentence_size >= 1, "input_sentence_size", "must be >= 1")
        require(self.max_sentence_bytes >= 64, "max_sentence_bytes", "must be >= 64")
        require(self.num_threads >= 1, "num_threads", "must be >= 1")


@dataclass
class BaseTrainConfig:
    """Train an English base SentencePiece first, when no `base` is given (the demo's 'English base')."""

    corpus: str = ""
    """English corpus (prepare output dir, file, dir or glob); '' = none (then `base` is required)."""
    domain: str = "en"
    """For a `prepare` output dir: the domain read as the base's corpus."""
    vocab_size: int = 4_000
    """Pieces of the base model."""
    model_type: str = "bpe"
    """'bpe' or 'unigram'."""

    def __post_init__(self):
        require(self.vocab_size >= 64, "vocab_size", "must be >= 64")
        require_choice(self.model_type, SPM_MODEL_TYPES, "model_type")


@dataclass
class TokenizerCommandConfig:
    """Expand a base tokenizer with Korean tokens, measure it, optionally resize a model for it."""

    base: str = ""
    """Base tokenizer: a SentencePiece .model, a tokenizer.json, or an HF tokenizer directory."""
    corpus: Any = "data/ko"
    """Korean corpus: a `prepare` output dir, or text files / dirs / globs (one path or a list)."""
    output_dir: str = ""
    """Where the expanded tokenizer is written ('' = <run dir>/tokenizer)."""
    extra_model: str = ""
    """Merge this existing SentencePiece model instead of training one: all its new pieces in its order, as Chinese-LLaMA did (see num_new_tokens)."""
    num_new_tokens: Optional[int] = None
    """New tokens, most frequent on the corpus first; null = 14,336 (Llama-2-ko's count) for a trained model, every new piece of extra_model."""
    pad_to_multiple_of: int = 64
    """The new vocabulary size is a multiple of this (next most frequent tokens, else unused placeholders)."""
    require_hangul: bool = True
    """Only add tokens with Hangul (text without Korean keeps the base's ids); not applied to all of extra_model (num_new_tokens null)."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """How the Korean corpus is sampled."""
    spm: SpmTrainConfig = field(default_factory=SpmTrainConfig)
    """Training of the Korean model."""
    train_base: BaseTrainConfig = field(default_factory=BaseTrainConfig)
    """Train an English base first when `base` is ''."""
    heldout: dict[str, str] = field(default_factory=lambda: {"ko": "data/heldout/ko.txt", "en": "data/heldout/en.txt"})
    """Domain -> held-out text (.txt one document per line, .jsonl `text`) for the efficiency report."""
    max_heldout_docs: int = 0
    """Measure at most this many held-out documents per domain (0 = all)."""
    reference: str = ""
    """A reference Korean tokenizer measured alongside (e.g. ../shared/tokenizers/polyglot-ko)."""
    model_dir: str = ""
    """HF causal LM directory to resize for the new vocabulary ('' = none); written to <run dir>/model."""
    output_init: str = "mean"
    """lm_head rows of new tokens: 'mean' of their base pieces' rows, or 'first_piece' (EEVE's choice)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking."""

    def __post_init__(self):
        if isinstance(self.corpus, str):
            self.corpus = [self.corpus]
        self.corpus = [str(c) for c in self.corpus]
        require(bool(self.base) or bool(self.train_base.corpus), "base",
                "set the base tokenizer (base=<tokenizer.model | tokenizer.json | HF dir>) or train_base.corpus=<English text>")
        require(len(self.corpus) > 0 and all(self.corpus), "corpus", "give a prepare output dir or text files")
        require(self.num_new_tokens is None or self.num_new_tokens >= 0, "num_new_tokens", "must be >= 0 (or null)")
        require(self.pad_to_multiple_of >= 1, "pad_to_multiple_of", "must be >= 1")
        require(bool(self.heldout), "heldout", "give at least one domain=path")
        require(self.max_heldout_docs >= 0, "max_heldout_docs", "must be >= 0")
        require_choice(self.output_init, OUTPUT_INITS, "output_init")

    @property
    def num_new_tokens_or_default(self) -> int | None:
        """num_new_tokens, with null resolved: None (= all pieces) for extra_model, else DEFAULT_NUM_NEW_TOKENS."""
        if self.num_new_tokens is not None:
            return self.num_new_tokens
        return None if self.extra_model else DEFAULT_NUM_NEW_TOKENS
