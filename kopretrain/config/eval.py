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
KOBEST_TASKS = ("BoolQ", "COPA", "HellaSwag", "SentiNeg", "WiC")


@dataclass
class KobestConfig:
    """KoBEST by log-likelihood of the answer choices (lm-evaluation-harness's kobest_* prompts)."""

    enabled: bool = True
    """Score KoBEST (false = bits per character only)."""
    tasks: list[str] = field(default_factory=lambda: list(KOBEST_TASKS))
    """Tasks to score, from BoolQ, COPA, HellaSwag, SentiNeg, WiC (any case)."""
    data_dir: str = "data/kobest"
    """Directory holding <Task>/<split>.tsv in the KoBEST TSV layout (the shipped dev and test splits)."""
    split: str = "test"
    """Split scored: test | dev."""
    num_fewshot: int = 0
    """Examples (with their answer) before each item: 0 = zero-shot; drawn from the dev split."""
    seed: int = 1234
    """Seed of the few-shot draw (lm-evaluation-harness's default fewshot_random_seed)."""
    limit: int = 0
    """Score only the first N items of each task (0 = all)."""
    batch_size: int = 16
    """Prompt+choice sequences per forward pass."""

    def __post_init__(self):
        names = {t.lower(): t for t in KOBEST_TASKS}  # any case, as the train key eval.kobest_tasks
        self.tasks = [names.get(str(t).lower(), str(t)) for t in self.tasks]
        require(len(set(self.tasks)) == len(self.tasks), "tasks", f"{list(self.tasks)} names a task twice")
        for t in self.tasks:
            require(t in KOBEST_TASKS, "tasks", f"{t!r} is not one of {', '.join(KOBEST_TASKS)}")
        require(self.split in ("test", "dev"), "split", f"{self.split!r} is not one of test, dev")
        require(self.num_fewshot >= 0, "num_fewshot", "must be >= 0")
        require(self.limit >= 0, "limit", "must be >= 0 (0 = all items)")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass
class EvalConfig:
    """Bits per character per domain on held-out text and KoBEST, of a model and optionally its base."""

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
    kobest: KobestConfig = field(default_factory=KobestConfig)
    """KoBEST accuracy and macro-F1 (kobest.enabled=false to skip)."""
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


@dataclass
class TrainEvalConfig:
    """Held-out bits per character per domain during `train` (the train config's `eval`)."""

    every_num_steps: int = 0
    """Score the held-out text every N optimizer steps and at the last step (0 = never)."""
    at_end: bool = True
    """Score the held-out text at the last step (and a pretrained base before the first) into report.json `eval` and the run's metrics (ko_bpc, en_bpc_retained, ...)."""
    heldout: dict[str, str] = field(default_factory=lambda: {"ko": "data/heldout/ko.txt", "en": "data/heldout/en.txt"})
    """Domain -> held-out file (any format `prepare` reads; text in the `text` field/column)."""
    max_docs_per_domain: int = 64
    """Documents per domain (the first N; 0 = all): every eval scores the same ones."""
    max_len: int = 0
    """Window length in tokens (0 = the training sequence length)."""
    batch_size: int = 8
    """Windows per forward pass on each rank."""
    kobest_tasks: list[str] = field(default_factory=list)
    """KoBEST tasks scored at every eval too, e.g. [copa, boolq] (any case; [] = none)."""
    kobest_max_items: int = 50
    """KoBEST items per task: the first N of kobest_split (0 = all)."""
    kobest_split: str = "dev"
    """KoBEST split scored during training: dev | test."""
    kobest_data_dir: str = "data/kobest"
    """Directory holding <Task>/<split>.tsv (as `kopretrain eval`'s kobest.data_dir)."""
    kobest_num_fewshot: int = 0
    """Few-shot examples per KoBEST item, drawn from the dev split (as `kopretrain eval`'s kobest.num_fewshot)."""

    def kobest_config(self) -> KobestConfig:
        """These kobest_* keys as `kopretrain eval`'s KobestConfig (tasks in KoBEST's spelling)."""
        names = {t.lower(): t for t in KOBEST_TASKS}
        return KobestConfig(tasks=[names.get(str(t).lower(), str(t)) for t in self.kobest_tasks],
                            data_dir=self.kobest_data_dir, split=self.kobest_split,
                            num_fewshot=self.kobest_num_fewshot, limit=self.kobest_max_items, batch_size=self.batch_size)

    def __post_init__(self):
        require(not self.kobest_tasks or bool(self.every_num_steps or self.at_end), "kobest_tasks",
                "scored only at evals: set every_num_steps or at_end=true")
        try:
            self.kobest_config()
        except ConfigError as e:  # named by this config's key
            raise ConfigError({"limit": "kobest_max_items", "batch_size": "batch_size"}.get(e.key, f"kobest_{e.key}"),
                              e.message) from None
        require(self.every_num_steps >= 0, "every_num_steps", "must be >= 0 (0 = no eval during training)")
        require(bool(self.heldout) or (self.every_num_steps == 0 and not self.at_end), "heldout", "give at least one domain=path")
        require(self.max_docs_per_domain >= 0, "max_docs_per_domain", "must be >= 0")
        require(self.max_len == 0 or self.max_len >= MIN_MAX_LEN, "max_len",
                f"{self.max_len} is too short to score a window (0 = the training sequence length, else >= {MIN_MAX_LEN})")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")
