"""Reading held-out evaluation text, with `prepare`'s reader (`kopretrain.data.documents`).

    docs = read_heldout_documents("ko", "data/heldout/ko.txt", max_docs=50)  # Documents(texts, rejected)
    texts = read_heldout("data/heldout/en.txt")                               # list[str], skips told on stderr

Any format `prepare` reads (txt a document per line, jsonl with `text_field`, csv/tsv, parquet,
txt_file; .gz/.zst), in any line-safe `encoding`. Records prepare would reject (invalid_utf8,
malformed_json, null_text, non_string_text, ...) are skipped and counted by reason; texts are
put in NFC. A missing file, or one with no readable document, is a one-line UserError.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

from kopretrain.data.documents import Documents, describe_rejected, read_documents, source_for
from kopretrain.errors import ConfigError, UserError
from kopretrain.paths import resolve_path


def read_heldout_documents(domain: str, path: str | Path, max_docs: int = 0, *, format: str = "auto",
                           text_field: str = "text", encoding: str = "utf-8", text_field_key: str = "") -> Documents:
    """The documents of one domain's held-out file (at most `max_docs`, 0 = all) and its rejects;
    `text_field_key` (e.g. `heldout_text_field`) starts the error of a file without the text column."""
    label = f"heldout.{domain}"
    if not glob.has_magic(str(path)) and not resolve_path(path).exists():
        raise UserError(f"{label}: file not found: {path}")
    try:
        source = source_for(path, format=format, text_field=text_field, encoding=encoding,
                            name=label.replace("/", "_"), domain=domain or "any")
    except ConfigError as e:
        raise UserError(f"{label}: {e}") from None
    try:
        docs = read_documents(source, max_docs=max_docs)
    except UserError as e:  # prepare's reader names its own key (text_field): name the command's
        if not text_field_key or "(text_field)" not in str(e):
            raise
        raise UserError(f"{text_field_key}: " + str(e).replace(" (text_field)", "")) from None
    if not docs.texts:
        skipped = f" ({docs.num_rejected} records skipped: {describe_rejected(docs.rejected)})" if docs.rejected else ""
        raise UserError(f"{label}: no readable documents in {path}{skipped}")
    return docs


def skipped_line(domain: str, path: str | Path, docs: Documents) -> str:
    """One line telling what was skipped in a held-out file ('' if nothing was)."""
    if not docs.rejected:
        return ""
    total = len(docs.texts) + docs.num_rejected
    return (f"heldout.{domain}: skipped {docs.num_rejected} of {total} records in {path} "
            f"({describe_rejected(docs.rejected)})")


def read_heldout(path: str | Path, max_docs: int = 0, *, domain: str = "", format: str = "auto",
                 text_field: str = "text", encoding: str = "utf-8") -> list[str]:
    """Texts of a held-out file; one line on stderr if records were skipped."""
    docs = read_heldout_documents(domain or Path(str(path)).stem, path, max_docs, format=format,
                                  text_field=text_field, encoding=encoding)
    line = skipped_line(domain or Path(str(path)).stem, path, docs)
    if line:
        print(line, file=sys.stderr)
    return docs.texts
