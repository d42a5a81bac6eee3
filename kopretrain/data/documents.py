"""One reader for every text file kopretrain reads outside `prepare`'s Ray pipeline: held-out
files (eval, tokenizer efficiency, demo), raw tokenizer corpora, and later KoBEST TSVs.

    docs = read_documents("data/heldout/ko.txt")                      # Documents(texts, rejected)
    docs = read_documents("ko.jsonl", encoding="cp949", max_docs=100)
    texts, rejected = docs                                            # or by name
    for text, reason in iter_documents(source): ...                   # streaming, SourceConfig

It is `prepare`'s read and validate stages run in one process, so a file reads the same here as
in `prepare`: the same formats (jsonl/.json/.ndjson, parquet, txt a document per line, txt_file,
csv, tsv; any line format .gz/.zst compressed), the same `format`, `text_field` ('Q,A' joins
fields), `encoding` and `max_record_bytes` settings (a `SourceConfig`), and the same reject
reasons (`invalid_utf8`, `decode_error`, `malformed_json`, `not_json_object`,
`missing_text_field`, `null_text`, `non_string_text`, `empty_text`, `too_long`,
`bad_csv_row`, ..., then validate's `control_chars`, `replacement_chars`). A bad record is
counted by reason, never an exception. Good texts are put in Unicode NFC, as prepare's
normalize stage does first, so an NFD file (decomposed Hangul) reads as its NFC form. The rest of
prepare's cleaning (HTML, whitespace, jamo, filters, PII) is not applied: the text is used as
written. Pure: no Ray.
Run its tests: `.venv/bin/python -m pytest tests/data/test_documents.py -q`.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from kopretrain.config.data_stages import SourceConfig, ValidateConfig
from kopretrain.data import read
from kopretrain.data.validate import validate_record

READ_CHUNK_BYTES = 1 << 40  # one read task per file: one process streams it, nothing to split
_VALIDATE = ValidateConfig()


class Documents(NamedTuple):
    """The good texts of a file (in file order) and the records skipped, counted by reason."""

    texts: list[str]
    rejected: dict[str, int]

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())


def source_for(path: str | Path, *, format: str = "auto", text_field: str = "text", encoding: str = "utf-8",
               name: str = "documents", domain: str = "any") -> SourceConfig:
    """A SourceConfig for one file, directory or glob (raises ConfigError on a bad setting)."""
    return SourceConfig(name=name, path=str(path), domain=domain, format=format, text_field=text_field,
                        encoding=encoding)


def nfc(text: str) -> str:
    """Unicode NFC, skipped when the text already is (the common case, a fast C check)."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def iter_documents(source: SourceConfig, files: Optional[list[str]] = None) -> Iterator[tuple[Optional[str], Optional[str]]]:
    """(text, None) for each good document and (None, reason) for each rejected record, in file
    order, over `files` (default: every file of the source; UserError if none)."""
    files = read.list_files(source) if files is None else files
    for task in read.plan_reads(source, files, READ_CHUNK_BYTES):
        with closing(read.read_task(task, source)) as records:
            for record in records:
                reason = validate_record(record, _VALIDATE)
                if reason:
                    yield None, reason
                else:
                    yield nfc(record["text"]), None


def read_documents(path: str | Path | SourceConfig, *, format: str = "auto", text_field: str = "text",
                   encoding: str = "utf-8", max_docs: int = 0) -> Documents:
    """Good texts of `path` (a file, directory or glob; or a ready SourceConfig), at most
    `max_docs` (0 = all), and the counts of the records skipped before the last one kept."""
    source = path if isinstance(path, SourceConfig) else source_for(path, format=format, text_field=text_field,
                                                                    encoding=encoding)
    texts: list[str] = []
    rejected: Counter = Counter()
    with closing(iter_documents(source)) as docs:
        for text, reason in docs:
            if reason:
                rejected[reason] += 1
                continue
            texts.append(text)
            if max_docs and len(texts) >= max_docs:
                break
    return Documents(texts, dict(sorted(rejected.items())))


def describe_rejected(rejected: dict[str, int]) -> str:
    """'malformed_json 1, non_string_text 2' (by reason name)."""
    return ", ".join(f"{reason} {n}" for reason, n in sorted(rejected.items()))
