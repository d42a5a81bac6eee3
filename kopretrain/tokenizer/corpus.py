"""Read a bounded, deterministic sample of documents for tokenizer training.

`corpus` paths may be:
- a `prepare` output dir: the `text` of `clean/*.parquet` rows of the configured domain;
- raw text files, directories (recursive) or globs, read with the project's one reader
  (`kopretrain.data.documents`: prepare's read + validate, texts in NFC; jsonl / txt / csv /
  tsv / parquet, .gz / .zst, bad records as rejects with prepare's reasons). Each file's text
  fields are the configured `text_fields` it has (chatbot `Q,A`, KorSTS `sentence1,sentence2`,
  NSMC `review`, `text`); several are joined by a newline.

A seeded reservoir sample (Algorithm R) keeps at most `num_sample_docs` documents, so memory is
bounded whatever the corpus size, and the same files + seed give the same sample. Nothing is
dropped silently: rejected records are counted by reason, and files in a directory that no
reader knows (README, licences) are listed as skipped; a file named explicitly that no reader
knows is a UserError.

    sample = sample_corpus(["data/ko"], SampleConfig())
    sample.texts[:3], sample.num_docs_seen, sample.rejected
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from kopretrain.config.data_stages import SourceConfig
from kopretrain.config.tokenizer import SampleConfig
from kopretrain.data import read
from kopretrain.data.documents import iter_documents
from kopretrain.errors import UserError
from kopretrain.paths import resolve_path


def _fields_in_file(path: str, fmt: str, compression: str | None, wanted: list[str]) -> list[str] | None:
    """The wanted text fields a csv/tsv header, the first JSON line or a parquet schema has
    ([] for txt, None when it has none of them)."""
    if fmt == "txt":
        return []
    if fmt == "parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
    else:
        with read.open_stream(path, compression) as f:
            line = b""
            while not line.strip():
                line = f.readline(1 << 20)
                if not line:
                    break
        text = line.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n")
        if fmt == "jsonl":
            try:
                record = json.loads(text) if text else {}
            except json.JSONDecodeError:
                record = {}
            names = list(record) if isinstance(record, dict) else []
        else:
            names = next(csv.reader([text], delimiter="\t" if fmt == "tsv" else ","), [])
    present = [name for name in wanted if name in names]
    return present or None


def _prepared_texts(directory, domain: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    files = sorted((directory / "clean").glob("*.parquet"))
    if not files:
        raise UserError(f"prepare output dir has no clean/*.parquet: {directory}")
    for path in files:
        pf = pq.ParquetFile(path)
        columns = ["text", "domain"] if "domain" in pf.schema_arrow.names else ["text"]
        for batch in pf.iter_batches(columns=columns, batch_size=4096):
            texts = batch.column("text").to_pylist()
            domains = batch.column("domain").to_pylist() if len(columns) == 2 else [domain] * len(texts)
            yield from (t for t, d in zip(texts, domains) if t and d == domain)


@dataclass
class CorpusSample:
    texts: list[str]
    """The sampled documents (non-empty, cut to max_doc_chars)."""
    num_docs_seen: int
    files: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    """Files under a corpus directory that no reader knows."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Records the reader rejected, by reason."""


def _documents(paths: list[str], cfg: SampleConfig, domain: str, sample: CorpusSample) -> Iterator[str]:
    rejected: Counter = Counter()
    for raw in paths:
        p = resolve_path(raw)
        if p.is_dir() and (p / "clean").is_dir():
            sample.files.append(str(p / "clean"))
            yield from _prepared_texts(p, domain)
            continue
        explicit = p.is_file()
        for path in read.list_files(SourceConfig(name="corpus", path=raw, domain=domain)):
            fmt, compression = read.file_kind(path, "auto")
            fields = _fields_in_file(path, fmt, compression, cfg.text_fields) if fmt else None
            if fields is None:  # no reader for it, or none of the text fields
                if explicit:
                    raise UserError(f"unrecognised corpus file (jsonl/txt/csv/tsv/parquet with one of the "
                                    f"text fields {cfg.text_fields}): {path}")
                sample.skipped_files.append(path)
                continue
            source = SourceConfig(name="corpus", path=path, domain=domain, text_field=",".join(fields) or "text")
            sample.files.append(path)
            for text, reason in iter_documents(source, [path]):
                if reason:
                    rejected[reason] += 1
                else:
                    yield text
    sample.rejected = dict(rejected)


def sample_corpus(paths: list[str], cfg: SampleConfig, domain: str | None = None) -> CorpusSample:
    """Reservoir-sample documents from `paths` (see module docstring)."""
    sample = CorpusSample([], 0)
    rng = random.Random(cfg.seed)
    for text in _documents(list(paths), cfg, domain or cfg.domain, sample):
        if not text.strip():
            continue
        text = text[: cfg.max_doc_chars]
        sample.num_docs_seen += 1
        if len(sample.texts) < cfg.num_sample_docs:
            sample.texts.append(text)
        else:
            j = rng.randrange(sample.num_docs_seen)
            if j < cfg.num_sample_docs:
                sample.texts[j] = text
    if not sample.texts:
        raise UserError(f"corpus has no text: {', '.join(paths)}")
    return sample
