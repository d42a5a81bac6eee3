"""Per-format record parsing for the read stage (`read.py` does files, streams and tasks).

Each line parser takes one physical line (or None when the line was longer than the limit) and
yields 0 or 1 records; the csv parser with quotes may join lines first (a quoted field may hold
newlines: a record's quotes are balanced once its `"` count is even, as RFC 4180 escapes `"` as
`""`). Records are the read contract: {"id","source","domain","text","reason","raw"}.
Run its tests: `.venv/bin/python -m pytest tests/data/test_read.py -q`.
"""

from __future__ import annotations

import csv
import json
import re
from typing import Iterator, Optional

from kopretrain.config.data_stages import SourceConfig
from kopretrain.data.streams import open_stream
from kopretrain.errors import UserError

RAW_KEEP_BYTES = 65_536  # the most of an offending line a rejected record keeps
_MISSING = object()
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone surrogates from JSON \u escapes: not encodable
_DELIMITERS = {"csv": ",", "tsv": "\t"}


def bad(rid: str, source: SourceConfig, reason: str, raw, detail: str = "", total_bytes: int = 0) -> dict:
    """A rejected record: `raw` (bytes or str) cut to RAW_KEEP_BYTES; the original size noted if cut."""
    if isinstance(raw, bytes):
        text = raw[:RAW_KEEP_BYTES].decode(source.encoding, "replace")
    else:
        text = raw[:RAW_KEEP_BYTES]
    if total_bytes > RAW_KEEP_BYTES:
        text += f" …[truncated: {total_bytes} bytes, first {RAW_KEEP_BYTES} kept]"
    if detail:
        text = f"{text} [{detail}]" if text else f"[{detail}]"
    return {"id": rid, "source": source.name, "domain": source.domain, "text": None, "reason": reason, "raw": text}


def good(rid: str, source: SourceConfig, text: str) -> dict:
    return {"id": rid, "source": source.name, "domain": source.domain, "text": text, "reason": None, "raw": None}


def decode(data: bytes, source: SourceConfig, strip_bom: bool) -> Optional[str]:
    """The line without its line end, decoded strictly; None if it does not decode."""
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    try:
        s = data.decode(source.encoding)
    except UnicodeDecodeError:
        return None
    return s[1:] if strip_bom and s.startswith("\ufeff") else s


def _bad_decode(source: SourceConfig) -> str:
    return "invalid_utf8" if source.encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig") else "decode_error"


def text_record(rid: str, source: SourceConfig, data: bytes, strip_bom: bool) -> dict:
    """A whole-line or whole-file document."""
    s = decode(data, source, strip_bom)
    if s is None:
        return bad(rid, source, _bad_decode(source), data, total_bytes=len(data))
    if not s.strip():
        return bad(rid, source, "empty_text", data)
    return good(rid, source, s)


def from_fields(rid: str, source: SourceConfig, values: list, raw) -> dict:
    """A record from the text field value(s); several non-empty values are joined by a newline."""
    parts = []
    for v in values:
        if v is _MISSING:
            return bad(rid, source, "missing_text_field", raw, f"no field {source.text_field!r}")
        if v is None:
            return bad(rid, source, "null_text", raw)
        if isinstance(v, bytes):
            try:
                v = v.decode(source.encoding)
            except UnicodeDecodeError:
                return bad(rid, source, _bad_decode(source), v)
        if not isinstance(v, str):
            return bad(rid, source, "non_string_text", raw, f"{type(v).__name__}")
        if v.strip():
            parts.append(v)
    if not parts:
        return bad(rid, source, "empty_text", raw)
    return good(rid, source, parts[0] if len(parts) == 1 else "\n".join(parts))


class LineState:
    """What a line parser carries across the lines of one task."""

    def __init__(self, task: dict, source: SourceConfig):
        self.source = source
        self.fields = source.text_fields
        self.columns = task["columns"]
        self.skip_header = task["skip_header"]
        self.index = [self.columns.index(f) for f in self.fields] if self.columns else []
        self.pending: list[bytes] = []
        self.pending_lines: list[tuple[str, int, bytes, int]] = []  # (rid, pos, line, n) of pending csv lines
        self.pending_rid = ""
        self.pending_quotes = 0
        self.pending_bytes = 0
        self.delimiter = _DELIMITERS.get(task["format"], "")
        self.quoted = task["format"] in _DELIMITERS and csv_quoting(task["format"], source) == "minimal"

    def finish(self, rid: str) -> Iterator[dict]:
        """At the end of the task a csv record whose quote never closed is pending: its first
        line is the bad row (rejected); the lines it swallowed are parsed again on their own."""
        if self.pending:
            first, rest = self.pending_lines[0], self.pending_lines[1:]
            self.pending, self.pending_lines = [], []
            yield bad(first[0], self.source, "bad_csv_row", first[2], "unclosed quote")
            for line_rid, pos, line, n in rest:
                yield from parse_quoted_csv(self, line_rid, pos, line, line, n)
            yield from self.finish(rid)


def _too_long(state: LineState, rid: str, head: bytes, n: int) -> dict:
    return bad(rid, state.source, "too_long", head, f"line of {n} bytes > max_record_bytes={state.source.max_record_bytes}", n)


def parse_txt(state: LineState, rid: str, pos: int, line: Optional[bytes], head: bytes, n: int) -> Iterator[dict]:
    if line is None:
        yield _too_long(state, rid, head, n)
    elif line.strip():
        yield text_record(rid, state.source, line, strip_bom=pos == 0)


def parse_jsonl(state: LineState, rid: str, pos: int, line: Optional[bytes], head: bytes, n: int) -> Iterator[dict]:
    if line is None:
        yield _too_long(state, rid, head, n)
        return
    s = decode(line, state.source, strip_bom=pos == 0)
    if s is None:
        yield bad(rid, state.source, _bad_decode(state.source), line, total_bytes=n)
        return
    if not s.strip():
        return
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError) as e:
        yield bad(rid, state.source, "malformed_json", s, str(e)[:200])
        return
    if not isinstance(obj, dict):
        yield bad(rid, state.source, "not_json_object", s)
        return
    rec = from_fields(rid, state.source, [obj.get(f, _MISSING) for f in state.fields], s)
    if rec["reason"] is None and "\\u" in s and _SURROGATE.search(rec["text"]):
        rec = bad(rid, state.source, "invalid_unicode", s, "lone surrogate escape")
    yield rec


def _row_record(state: LineState, rid: str, row: list[str], raw: str) -> dict:
    if len(row) != len(state.columns):
        return bad(rid, state.source, "bad_csv_row", raw, f"{len(row)} fields, header has {len(state.columns)}")
    return from_fields(rid, state.source, [row[i] for i in state.index], raw)


def parse_delimited(state: LineState, rid: str, pos: int, line: Optional[bytes], head: bytes, n: int) -> Iterator[dict]:
    """csv/tsv without quoting: one physical line is one row."""
    if line is None:
        yield _too_long(state, rid, head, n)
        return
    if not line.strip():
        return
    s = decode(line, state.source, strip_bom=pos == 0)
    if state.skip_header:
        state.skip_header = False
        return
    if s is None:
        yield bad(rid, state.source, _bad_decode(state.source), line, total_bytes=n)
        return
    yield _row_record(state, rid, s.split(state.delimiter), s)


def parse_quoted_csv(state: LineState, rid: str, pos: int, line: Optional[bytes], head: bytes, n: int) -> Iterator[dict]:
    """RFC 4180 csv: physical lines are joined until the record's quotes balance."""
    if line is None:
        yield from state.finish(rid)
        yield _too_long(state, rid, head, n)
        return
    if not state.pending:
        if not line.strip():
            return
        state.pending_rid, state.pending_quotes, state.pending_bytes = rid, 0, 0
        state.pending_lines = []
    state.pending.append(line)
    state.pending_lines.append((rid, pos, line, n))
    state.pending_quotes += line.count(b'"')
    state.pending_bytes += n
    if state.pending_quotes % 2:
        if state.pending_bytes > state.source.max_record_bytes:
            data, state.pending, state.pending_lines = b"".join(state.pending), [], []
            yield _too_long(state, state.pending_rid, data[:RAW_KEEP_BYTES], len(data))
        return
    data, state.pending, state.pending_lines = b"".join(state.pending), [], []
    if state.skip_header:
        state.skip_header = False
        return
    s = decode(data, state.source, strip_bom=state.pending_rid.endswith("@0"))
    if s is None:
        yield bad(state.pending_rid, state.source, _bad_decode(state.source), data, total_bytes=len(data))
        return
    try:  # csv.reader([s]) sees one string; a stray quote can leave a newline in an unquoted field
        row = next(csv.reader([s], delimiter=state.delimiter), [])
    except csv.Error:
        yield bad(state.pending_rid, state.source, "bad_csv_row", data, total_bytes=len(data))
        return
    yield _row_record(state, state.pending_rid, row, s)


def csv_quoting(fmt: str, source: SourceConfig) -> str:
    """minimal or none: the source's setting, or by format (csv quotes, tsv does not: KorNLI-style TSVs hold bare `"`)."""
    if source.csv_quoting != "auto":
        return source.csv_quoting
    return "minimal" if fmt == "csv" else "none"


def parse_csv(state: LineState, rid: str, pos: int, line: Optional[bytes], head: bytes, n: int) -> Iterator[dict]:
    return (parse_quoted_csv if state.quoted else parse_delimited)(state, rid, pos, line, head, n)


LINE_PARSERS = {"jsonl": parse_jsonl, "txt": parse_txt, "csv": parse_csv, "tsv": parse_csv}


def read_csv_header(task: dict, source: SourceConfig) -> tuple[Optional[list[str]], int]:
    """(column names, header length in bytes) of a csv/tsv file; (None, 0) for an empty file.
    Raises UserError if the header is unreadable or lacks a text field."""
    with open_stream(task["path"], task["compression"]) as f:
        line = f.readline(source.max_record_bytes + 1)
    if not line.strip():
        return None, len(line)
    s = decode(line, source, strip_bom=True)
    if s is None or not line.endswith(b"\n") and len(line) > source.max_record_bytes:
        raise UserError(f"source {source.name!r}: {task['path']}: cannot read the header row")
    delimiter = _DELIMITERS[task["format"]]
    if csv_quoting(task["format"], source) == "minimal":
        columns = next(csv.reader([s], delimiter=delimiter), [])
    else:
        columns = s.split(delimiter)
    missing = [f for f in source.text_fields if f not in columns]
    if missing:
        raise UserError(f"source {source.name!r}: {task['path']}: no column {missing[0]!r} (text_field); columns: {columns}")
    return columns, len(line)


def plan_parquet(task: dict, source: SourceConfig) -> list[dict]:
    """One task per row group; a file that is not parquet becomes a task that yields one reject."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(task["path"]).metadata
        names = meta.schema.to_arrow_schema().names
    except Exception as e:  # noqa: BLE001 - any unreadable footer: the file is data, not a crash
        return [{**task, "error": f"{type(e).__name__}: {str(e)[:200]}"}]
    missing = [f for f in source.text_fields if f not in names]
    if missing:
        raise UserError(f"source {source.name!r}: {task['path']}: no column {missing[0]!r} (text_field); columns: {names}")
    tasks, row = [], 0
    for i in range(meta.num_row_groups):
        tasks.append({**task, "row_group": i, "row_start": row})
        row += meta.row_group(i).num_rows
    return tasks


def read_parquet(task: dict, source: SourceConfig, prefix: str) -> Iterator[dict]:
    import pyarrow.parquet as pq

    if "error" in task:
        yield bad(prefix, source, "corrupt_parquet", b"", task["error"])
        return
    try:
        table = pq.ParquetFile(task["path"]).read_row_group(task["row_group"], columns=source.text_fields)
        columns = [table.column(f).to_pylist() for f in source.text_fields]
    except Exception as e:  # noqa: BLE001 - a damaged row group is one reject, the other groups still read
        yield bad(f"{prefix}#{task['row_start']}", source, "corrupt_parquet", b"", f"row group {task['row_group']}: {type(e).__name__}: {str(e)[:200]}")
        return
    limit = source.max_record_bytes
    for j, values in enumerate(zip(*columns)):
        rid = f"{prefix}#{task['row_start'] + j}"
        rec = from_fields(rid, source, list(values), " | ".join(map(str, values))[:RAW_KEEP_BYTES])
        text = rec["text"]
        if text is not None and len(text) > limit // 4 and len(text.encode()) > limit:
            rec = bad(rid, source, "too_long", text, total_bytes=len(text.encode()))
        yield rec
