"""Read a bounded, deterministic sample of documents for tokenizer training.

`corpus` paths may be:
- a `prepare` output dir: `clean/*.parquet` rows of the configured domain (column `text`);
- text files, directories (searched recursively) or globs:
  `.txt` / `.txt.gz` one document per line, `.jsonl` / `.jsonl.gz` and `.csv` / `.tsv` with
  every configured text field present in a record taken as a document (chatbot Q and A,
  KorSTS sentence1 and sentence2, NSMC review), `.parquet` with a `text` column.

A seeded reservoir sample (Algorithm R) keeps at most `num_sample_docs` documents, so memory is
bounded whatever the corpus size, and the same files + seed give the same sample. Files in a
directory that are not text (README, licences) are skipped and listed in the result, not lost
silently; a file named explicitly that is not text is a UserError.

    sample = sample_corpus(["data/ko"], SampleConfig())
    sample.texts[:3], sample.num_docs_seen, sample.files
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from kopretrain.config.tokenizer import SampleConfig
from kopretrain.errors import UserError
from kopretrain.paths import resolve_path

SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".csv", ".tsv", ".parquet")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # law texts and bills have long fields


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")  # -sig: drop a BOM


def _read_file(path: Path, fields: list[str], domain: str | None) -> Iterator[str]:
    kind = _suffix(path)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise UserError(f"parquet corpus file has no 'text' column: {path}")
        texts = table.column("text").to_pylist()
        domains = table.column("domain").to_pylist() if domain and "domain" in table.column_names else None
        for i, text in enumerate(texts):
            if text and (domains is None or domains[i] == domain):
                yield text
        return
    with _open_text(path) as f:
        if kind in (".txt", ".txt.gz"):
            for line in f:
                yield line.rstrip("\r\n")
        elif kind in (".jsonl", ".jsonl.gz"):
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{path}:{n}: not a JSON line") from None
                if isinstance(record, dict):
                    yield from (record[k] for k in fields if isinstance(record.get(k), str))
        else:  # csv / tsv; TSVs of KorNLI/KorSTS have unbalanced quotes: read them verbatim
            tsv = kind == ".tsv"
            reader = csv.DictReader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
            present = [k for k in fields if k in (reader.fieldnames or [])]
            for row in reader:
                yield from (row[k] for k in present if isinstance(row.get(k), str))


def resolve_corpus_files(paths: list[str]) -> tuple[list[tuple[Path, bool]], list[str]]:
    """(file, is a prepare output file) for every corpus file, and the skipped non-text files."""
    files: list[tuple[Path, bool]] = []
    skipped: list[str] = []
    for raw in paths:
        p = resolve_path(raw)
        if any(ch in raw for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p if p.is_absolute() else raw), recursive=True))
            if not matches:
                raise UserError(f"corpus glob matches no files: {raw}")
            found = [m for m in matches if m.is_file()]
        elif p.is_dir():
            if (p / "clean").is_dir():  # a prepare output dir
                found = sorted((p / "clean").glob("*.parquet"))
                if not found:
                    raise UserError(f"prepare output dir has no clean/*.parquet: {p}")
                files += [(f, True) for f in found]
                continue
            found = sorted(f for f in p.rglob("*") if f.is_file())
            skipped += [str(f) for f in found if not _suffix(f)]
            found = [f for f in found if _suffix(f)]
        elif p.is_file():
            if not _suffix(p):
                raise UserError(f"unrecognised corpus file (expected {', '.join(SUFFIXES)}): {p}")
            found = [p]
        else:
            raise UserError(f"corpus path not found: {raw}")
        files += [(f, False) for f in found if _suffix(f)]
    if not files:
        raise UserError(f"no text files in corpus: {', '.join(paths)}")
    return files, skipped


@dataclass
class CorpusSample:
    texts: list[str]
    """The sampled documents (non-empty, cut to max_doc_chars)."""
    num_docs_seen: int
    files: list[str]
    skipped_files: list[str] = field(default_factory=list)


def sample_corpus(paths: list[str], cfg: SampleConfig, domain: str | None = None) -> CorpusSample:
    """Reservoir-sample documents from `paths` (see module docstring)."""
    files, skipped = resolve_corpus_files(paths)
    rng = random.Random(cfg.seed)
    keep: list[str] = []
    seen = 0
    for path, prepared in files:
        for text in _read_file(path, cfg.text_fields, (domain or cfg.domain) if prepared else None):
            if not text or not text.strip():
                continue
            text = text[: cfg.max_doc_chars]
            seen += 1
            if len(keep) < cfg.num_sample_docs:
                keep.append(text)
            else:
                j = rng.randrange(seen)
                if j < cfg.num_sample_docs:
                    keep[j] = text
    if not keep:
        raise UserError(f"corpus has no text: {', '.join(paths)}")
    return CorpusSample(keep, seen, [str(f) for f, _ in files], skipped)
