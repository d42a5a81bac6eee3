"""Schema of `kopretrain prepare` (conf/prepare.yaml, conf/source/*.yaml, conf/experiment/prepare/).

    kopretrain prepare source=sample output_dir=outputs/corpus tokenizer.path=tok/tokenizer.model seq_len=2048

Sources and the per-record cleaning stages (normalize, filters, PII) have their own schemas in
`kopretrain.config.data_stages`; this module adds dedup, tokenize/pack and how the run is laid out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kopretrain.config.common import RayConfig, TrackingConfig, require, require_choice
from kopretrain.config.data_stages import CleanConfig, SourceConfig

SHINGLE_WHITESPACE_OPTIONS = ("remove", "collapse")  # see kopretrain.data.dedup.SHINGLE_WHITESPACE


@dataclass
class DedupConfig:
    """Exact dedup on a normalised hash, then near-duplicate removal with MinHash LSH."""

    exact: bool = True
    """Remove documents whose whitespace-normalised text equals an earlier document's."""
    near: bool = True
    """Remove near-duplicates (MinHash LSH over character shingles), keeping the first of each cluster."""
    threshold: float = 0.8
    """Jaccard similarity of shingle sets at which two documents count as near-duplicates."""
    num_perm: int = 128
    """MinHash permutations per document (signature length)."""
    shingle_chars: int = 5
    """Characters per shingle (character n-grams suit Korean better than word n-grams)."""
    shingle_whitespace: str = "remove"
    """'remove' (Korean spacing varies: 날씨가 좋다 = 날씨가좋다) or 'collapse' whitespace before shingling."""
    num_bands: int = 0
    """LSH bands (0 = chosen with rows_per_band from threshold and num_perm, as datasketch does)."""
    rows_per_band: int = 0
    """Signature rows per band (0 = chosen from threshold and num_perm)."""
    seed: int = 1
    """Seed of the MinHash hash family (same seed, same signatures)."""
    num_shuffle_partitions: int = 0
    """Partitions of each dedup shuffle wave (0 = one per ~16 MiB of keys, at least one per parallel task)."""
    shuffle_wave_bytes: int = 0
    """Most bytes of keys (16 per document and band) a dedup shuffle holds at once; more go in waves (0 = 64 MiB per parallel task)."""

    def __post_init__(self):
        require(0.0 < self.threshold < 1.0, "threshold", "must be in (0, 1)")
        require(self.num_perm >= 2, "num_perm", "must be >= 2")
        require(self.shingle_chars >= 1, "shingle_chars", "must be >= 1")
        require_choice(self.shingle_whitespace, SHINGLE_WHITESPACE_OPTIONS, "shingle_whitespace")
        require((self.num_bands == 0) == (self.rows_per_band == 0), "num_bands",
                "set num_bands and rows_per_band together (or both 0 for automatic)")
        require(self.num_bands * self.rows_per_band <= self.num_perm, "num_bands",
                f"num_bands x rows_per_band must be <= num_perm ({self.num_perm})")
        require(self.num_shuffle_partitions >= 0, "num_shuffle_partitions", "must be >= 0")
        require(self.shuffle_wave_bytes >= 0, "shuffle_wave_bytes", "must be >= 0")


@dataclass
class TokenizeConfig:
    """Which tokenizer encodes the clean text (empty path: stop after clean + dedup)."""

    path: str = ""
    """SentencePiece .model, tokenizer.json or HF tokenizer directory ('' = skip tokenize and pack)."""
    num_docs_per_batch: int = 1000
    """Documents per encode_batch call."""

    def __post_init__(self):
        require(self.num_docs_per_batch >= 1, "num_docs_per_batch", "must be >= 1")


@dataclass
class PrepareConfig:
    """Raw corpora -> clean, deduplicated parquet -> packed token shards per domain."""

    sources: list[SourceConfig] = field(default_factory=list)
    """Input sources (pick a named set with `source=sample`, or give `sources=[{name:..,path:..,domain:..}]`)."""
    output_dir: str = ""
    """Where clean/, rejected/, tokens/ and report.json go ('' = the run directory)."""
    tokenizer: TokenizeConfig = field(default_factory=TokenizeConfig)
    """Tokenizer for packing (`tokenizer.path`)."""
    tokens_dir: str = ""
    """Where packed tokens go, one directory per domain ('' = output_dir/tokens)."""
    seq_len: int = 2048
    """Tokens per packed training sequence."""
    num_tokens_per_shard: int = 67_108_864
    """Tokens per shard file (rounded down to whole sequences; 2**26 = 128 MiB of uint16)."""
    read_chunk_bytes: int = 67_108_864
    """Most bytes per read task: uncompressed line files are split into line-aligned ranges of min(this, input/64, >= 1 MiB)."""
    num_records_per_batch: int = 2000
    """Records cleaned and hashed together inside a task (bounds a task's memory)."""
    num_parallel_tasks: int = 0
    """Concurrent Ray tasks per stage (0 = the cluster's CPUs; on a local instance, this machine's cores)."""
    keep_intermediate: bool = False
    """Keep `_stage/` (pre-dedup parquet, token parts) after a successful run."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Per-record stages: normalize, quality filters, PII scrubbing."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Exact and near-duplicate removal."""
    ray: RayConfig = field(default_factory=RayConfig)
    """Ray connection (RAY_ADDRESS under `ray job submit`)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking."""

    def __post_init__(self):
        require(len(self.sources) > 0, "sources", "give at least one source (e.g. source=sample)")
        names = [s.name for s in self.sources]
        require(len(set(names)) == len(names), "sources", f"source names must be unique, got {names}")
        require(self.seq_len >= 2, "seq_len", "must be >= 2")
        require(self.num_tokens_per_shard >= self.seq_len, "num_tokens_per_shard", "must be >= seq_len")
        require(self.read_chunk_bytes >= 1024, "read_chunk_bytes", "must be >= 1024")
        require(self.num_records_per_batch >= 1, "num_records_per_batch", "must be >= 1")
        require(self.num_parallel_tasks >= 0, "num_parallel_tasks", "must be >= 0")
