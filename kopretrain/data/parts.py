"""The unit jobs of `prepare`, one per read task or part (file I/O, no Ray: the glue maps them).

Each job owns its output files outright, writes them under temporary names and renames them,
and writes its small JSON marker last. So a job is either done (marker present) or not, a
re-run skips done jobs, and a killed job leaves nothing a later run could mistake for output.
Part i of every stage keeps the input order (sources in config order, files sorted, lines in
file order), which is what makes the outputs byte-identical across runs and parallelism.

    clean_part(job)      read + clean + hash one read task -> _stage/clean/part-i.parquet,
                         rejected/part-i.parquet, marker _stage/clean/part-i.json
    finalize_part(...)   drop the duplicates of part i -> clean/part-i.parquet, duplicates/part-i.parquet
    tokenize_part(...)   encode clean/part-i.parquet -> _stage/tokens-<fp>/part-i.bin (+ .json marker)

Doc keys: document r of part i is `i << 32 | r`, so sorting by key is sorting by input order.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kopretrain.config.data_stages import CleanConfig, SourceConfig
from kopretrain.data.dedup import DedupParams, MinHasher, band_keys, exact_hashes

PART_BITS = 32
CLEAN_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("domain", pa.string()), ("source", pa.string())])
REJECTED_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("reason", pa.string()), ("text", pa.string())])
DUPLICATES_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("kind", pa.string())])
PARQUET_OPTIONS = {"compression": "zstd"}  # fixed writer options: byte-identical files run to run


@dataclass(frozen=True)
class Layout:
    """Where every file of a prepare run lives under `output_dir`."""

    output_dir: Path

    @property
    def stage(self) -> Path:
        return self.output_dir / "_stage"

    def part(self, kind: str, i: int, suffix: str = ".parquet") -> Path:
        base = {"clean": self.output_dir / "clean", "rejected": self.output_dir / "rejected",
                "duplicates": self.output_dir / "duplicates", "stage": self.stage / "clean",
                "final": self.stage / "final"}[kind]
        return base / f"part-{i:05d}{suffix}"


@dataclass(frozen=True)
class CleanJob:
    """Everything one stage-1 task needs (picklable: shipped to a Ray worker)."""

    index: int
    task: dict
    source: SourceConfig
    clean: CleanConfig
    dedup: DedupParams
    exact: bool
    near: bool
    num_records_per_batch: int
    layout: Layout


def stage_schema(num_bands: int) -> pa.Schema:
    bands = [(f"band_{k:02d}", pa.uint64()) for k in range(num_bands)]
    return pa.schema([("doc_key", pa.int64()), *CLEAN_SCHEMA, ("hash", pa.uint64()), *bands])


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, ensure_ascii=False, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


class _PartWriter:
    """A parquet file written batch by batch under a temporary name; renamed on `close`.
    With `keep_empty=False` a part that got no rows leaves no file at all."""

    def __init__(self, path: Path, schema: pa.Schema, keep_empty: bool = True):
        self.path, self.schema, self.keep_empty = path, schema, keep_empty
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer: pq.ParquetWriter | None = None
        self.num_rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema, **PARQUET_OPTIONS)
        self.writer.write_table(table)
        self.num_rows += table.num_rows

    def close(self) -> None:
        if self.writer is None and self.keep_empty:
            self.write(self.schema.empty_table())
        if self.writer is not None:
            self.writer.close()
            os.replace(self.tmp, self.path)
        elif self.path.exists():  # an empty result replaces a stale file of an earlier run
            self.path.unlink()


def _batches(records, n: int):
    batch = []
    for r in records:
        batch.append(r)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def clean_part(job: CleanJob) -> dict:
    """Stage 1 for one read task; returns (and writes last) its marker with the counts."""
    from kopretrain.data.clean import clean_records
    from kopretrain.data.read import read_task

    num_bands, rows_per_band = job.dedup.bands() if job.near else (0, 0)
    hasher = MinHasher(job.dedup.num_perm, job.dedup.seed, job.dedup.shingle_chars, job.dedup.shingle_whitespace)
    stage = _PartWriter(job.layout.part("stage", job.index), stage_schema(num_bands))
    rejected_out = _PartWriter(job.layout.part("rejected", job.index), REJECTED_SCHEMA, keep_empty=False)
    num_in, reasons, counters = 0, Counter(), Counter()
    num_chars = num_bytes = 0
    for batch in _batches(read_task(job.task, job.source), job.num_records_per_batch):
        num_in += len(batch)
        kept, rejected, batch_counters = clean_records(batch, job.clean)
        counters.update(batch_counters)
        if rejected:
            reasons.update(r["reason"] for r in rejected)
            rejected_out.write(pa.Table.from_pylist(
                [{k: r.get(k) for k in REJECTED_SCHEMA.names} for r in rejected], REJECTED_SCHEMA))
        if not kept:
            continue
        texts = [r["text"] for r in kept]
        num_chars += sum(map(len, texts))
        num_bytes += sum(len(t.encode("utf-8")) for t in texts)
        start = stage.num_rows
        cols = {
            "doc_key": np.arange(start, start + len(kept), dtype=np.int64) | (job.index << PART_BITS),
            **{k: [r[k] for r in kept] for k in CLEAN_SCHEMA.names},
            "hash": exact_hashes(texts) if job.exact else np.zeros(len(texts), dtype=np.uint64),
        }
        if num_bands:
            keys = band_keys(hasher.signatures(texts, num_bands * rows_per_band), num_bands, rows_per_band)
            cols.update({f"band_{k:02d}": keys[:, k] for k in range(num_bands)})
        stage.write(pa.table(cols, schema=stage.schema))
    stage.close()
    rejected_out.close()
    marker = {
        "index": job.index, "source": job.source.name, "domain": job.source.domain,
        "num_docs_in": num_in, "num_docs_clean": stage.num_rows, "num_chars_clean": num_chars,
        "num_bytes_clean": num_bytes, "rejected": dict(sorted(reasons.items())), "counters": dict(sorted(counters.items())),
    }
    assert num_in == stage.num_rows + sum(reasons.values()), "clean_records lost or invented records"
    write_json(job.layout.part("stage", job.index, ".json"), marker)
    return marker


def finalize_part(layout: Layout, index: int, exact_rows: np.ndarray, near_rows: np.ndarray,
                  batch_rows: int = 8192) -> dict:
    """Stream part i into clean/part-i.parquet without the duplicate rows (row numbers within the
    part), listing the removed ones in duplicates/part-i.parquet; returns (and writes last) its marker."""
    source = pq.ParquetFile(layout.part("stage", index))
    kind = np.zeros(source.metadata.num_rows, dtype=np.int8)  # 0 keep, 1 exact, 2 near
    kind[exact_rows], kind[near_rows] = 1, 2
    assert (kind == 1).sum() == len(exact_rows) and (kind == 2).sum() == len(near_rows), "a row removed twice"
    out = _PartWriter(layout.part("clean", index), CLEAN_SCHEMA, keep_empty=False)
    dups = _PartWriter(layout.part("duplicates", index), DUPLICATES_SCHEMA, keep_empty=False)
    offset = num_chars = num_bytes = 0
    for batch in source.iter_batches(batch_size=batch_rows, columns=CLEAN_SCHEMA.names):
        k = kind[offset : offset + batch.num_rows]
        offset += batch.num_rows
        kept = pa.Table.from_batches([batch]).filter(pa.array(k == 0))
        if kept.num_rows:
            out.write(kept)
            texts = kept.column("text").to_pylist()
            num_chars += sum(map(len, texts))
            num_bytes += sum(len(t.encode("utf-8")) for t in texts)
        if (k != 0).any():
            removed = pa.Table.from_batches([batch]).filter(pa.array(k != 0)).select(["id", "source"])
            labels = np.where(k[k != 0] == 1, "exact", "near").tolist()
            dups.write(removed.append_column("kind", pa.array(labels, pa.string())))
    out.close()
    dups.close()
    marker = {
        "index": index, "num_docs_out": out.num_rows, "num_exact_dups": int(len(exact_rows)),
        "num_near_dups": int(len(near_rows)), "num_chars_out": num_chars, "num_bytes_out": num_bytes,
    }
    assert offset == out.num_rows + dups.num_rows
    write_json(layout.part("final", index, ".json"), marker)
    return marker


_TOKENIZERS: dict = {}  # path -> loaded tokenizer, per worker process (loading an HF dir takes ~1 s)


def tokenize_part(clean_file: Path, out_file: Path, tokenizer_path: str, num_docs_per_batch: int) -> dict:
    """Encode one clean part (each document + EOS) into `out_file`, streaming batches of documents;
    its .json marker goes last."""
    from kopretrain.data.tokenize import encode_with_eos, write_token_part_marker
    from kopretrain.tokenizer.load import load_tokenizer

    if tokenizer_path not in _TOKENIZERS:
        _TOKENIZERS[tokenizer_path] = load_tokenizer(tokenizer_path)
    tokenizer = _TOKENIZERS[tokenizer_path]
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    num_docs = num_chars = num_tokens = 0
    with open(tmp, "wb") as f:
        for batch in pq.ParquetFile(clean_file).iter_batches(batch_size=num_docs_per_batch, columns=["text"]):
            texts = batch.column("text").to_pylist()
            tokens = encode_with_eos(texts, tokenizer, num_docs_per_batch)
            tokens.tofile(f)
            num_docs, num_chars, num_tokens = num_docs + len(texts), num_chars + sum(map(len, texts)), num_tokens + tokens.size
    os.replace(tmp, out_file)
    meta = {"num_docs": num_docs, "num_chars": num_chars, "num_tokens": int(num_tokens)}
    write_token_part_marker(out_file, meta)
    return meta
