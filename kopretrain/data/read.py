"""Read stage of `prepare`: find a source's files, plan read tasks, stream records out of them.

    files = list_files(source)                       # sorted; UserError if nothing matches
    tasks = plan_reads(source, files, 64 << 20)      # big line files -> line-aligned byte ranges
    for rec in read_task(tasks[0], source): ...      # {"id","source","domain","text","reason","raw"}

Formats: jsonl (.jsonl/.json/.ndjson), parquet, txt (a document per line), txt_file (a document
per file), csv/tsv (header row; `text_field` names the column(s)); any of the line formats may
be .gz or .zst compressed. Blank lines separate documents and are not records.

A bad record never stops the read: it is yielded with `reason` set (invalid_utf8, malformed_json,
not_json_object, missing_text_field, null_text, non_string_text, empty_text, too_long,
truncated_stream, corrupt_stream, bad_csv_row, corrupt_parquet, unsupported_format) and `raw`
holding at most 64 KiB of the offending bytes, decoded with replacement. Lines are read with a
bounded `readline`, so a 10 MB line costs at most `max_record_bytes` of memory.

Record ids are `<source>/<path relative to the source root>@<byte offset of the line>` (in the
decompressed stream), `#<row>` for parquet, no suffix for txt_file: stable whatever the chunking.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator, Optional

from kopretrain.config.data_stages import SourceConfig
from kopretrain.data import formats
from kopretrain.data.streams import READ_BLOCK, STREAM_ERRORS, open_stream
from kopretrain.errors import UserError
from kopretrain.paths import PROJECT_ROOT, resolve_path

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
              ".txt": "txt", ".csv": "csv", ".tsv": "tsv"}
LINE_FORMATS = ("jsonl", "txt", "csv", "tsv")
_SKIP_BLOCK = 1 << 18  # the most of an over-long line held at once while skipping it


def file_kind(path: str, fmt: str) -> tuple[Optional[str], Optional[str]]:
    """(format, compression) of a file: `fmt` unless 'auto', else by extension (None = unknown)."""
    name = os.path.basename(path).lower()
    compression = None
    for ext, comp in COMPRESSIONS.items():
        if name.endswith(ext):
            compression, name = comp, name[: -len(ext)]
    if fmt != "auto":
        return fmt, compression
    ext = os.path.splitext(name)[1]
    if compression and not ext:
        return "jsonl", compression  # plain `.zst` / `.gz`: JSON lines, the common web-dump form
    return EXTENSIONS.get(ext), compression


def _visible(rel: str) -> bool:
    return not any(part.startswith((".", "_")) for part in Path(rel).parts)


def _fixed_prefix(pattern: str) -> Path:
    fixed = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _glob(source: SourceConfig) -> tuple[Path, list[str]]:
    """(root, matches) of a glob source: from the launch directory, else from the project root."""
    pattern = os.path.expanduser(source.path)
    matches = glob.glob(pattern, recursive=True)
    if matches or os.path.isabs(pattern):
        return _fixed_prefix(pattern), matches
    pattern = str(PROJECT_ROOT / pattern)
    return _fixed_prefix(pattern), glob.glob(pattern, recursive=True)


def source_root(source: SourceConfig) -> Path:
    """The directory record ids are relative to: the directory, the glob's fixed prefix, or a file's parent."""
    if glob.has_magic(source.path):
        return _glob(source)[0]
    path = resolve_path(source.path)
    return path if path.is_dir() else path.parent


def list_files(source: SourceConfig) -> list[str]:
    """Every readable file of the source, sorted. Raises UserError naming the path if none."""
    if glob.has_magic(source.path):
        root, matches = _glob(source)
        candidates = []
        for match in matches:
            candidates.extend(_walk(Path(match)) if os.path.isdir(match) else [Path(match)])
    else:
        path = resolve_path(source.path)
        if not path.exists():
            raise UserError(f"source {source.name!r}: path {source.path!r} does not exist")
        if path.is_file():
            return [str(path)]  # named explicitly: read even if it starts with '_' or '.'
        root, candidates = path, _walk(path)
    files = sorted({str(p) for p in candidates if p.is_file() and _visible(os.path.relpath(p, root))})
    if not files:
        raise UserError(f"source {source.name!r}: no files match {source.path!r}")
    return files


def _walk(directory: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        out.extend(Path(dirpath) / f for f in filenames if not f.startswith((".", "_")))
    return out


def _skip_line(f) -> int:
    """Consume the rest of the current line in bounded pieces; return the bytes consumed."""
    n = 0
    while True:
        piece = f.readline(_SKIP_BLOCK)
        n += len(piece)
        if not piece or piece.endswith(b"\n"):
            return n


def _aligned_ranges(path: str, start: int, size: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """Split [start, size) into ranges of about chunk_bytes, each beginning at a line start."""
    bounds = [start]
    with open(path, "rb") as f:
        pos = start + chunk_bytes
        while pos < size:
            f.seek(pos - 1)  # a line starts at pos iff byte pos-1 is a newline
            nxt = pos - 1 + _skip_line(f)
            if nxt >= size:
                break
            bounds.append(nxt)
            pos = nxt + chunk_bytes
    bounds.append(size)
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def plan_reads(source: SourceConfig, files: list[str], chunk_bytes: int) -> list[dict]:
    """Read tasks (plain dicts) for `files`: uncompressed jsonl/txt/tsv (and unquoted csv) files
    bigger than `chunk_bytes` are split into line-aligned byte ranges; compressed files and quoted
    csv are one task; parquet is one task per row group. Raises UserError if a csv/tsv header or a
    parquet schema lacks the text field."""
    assert chunk_bytes > 0
    root = source_root(source)
    tasks = []
    for path in files:
        fmt, compression = file_kind(path, source.format)
        base = {"path": path, "rel": Path(os.path.relpath(path, root)).as_posix(), "format": fmt or "unsupported",
                "compression": compression, "start": 0, "end": None, "columns": None, "skip_header": False}
        if fmt == "parquet":
            tasks.extend(formats.plan_parquet(base, source))
            continue
        if fmt in ("csv", "tsv"):
            base["columns"], header_bytes = formats.read_csv_header(base, source)
            if base["columns"] is None:
                continue  # an empty file: no header, no records
            base["skip_header"] = True
        splittable = fmt in LINE_FORMATS and compression is None and (
            fmt in ("jsonl", "txt") or formats.csv_quoting(fmt, source) == "none")
        size = os.path.getsize(path)
        if splittable and size > chunk_bytes:
            first = header_bytes if fmt in ("csv", "tsv") else 0
            for start, end in _aligned_ranges(path, first, size, chunk_bytes):
                tasks.append({**base, "start": start, "end": end, "skip_header": False})
        else:
            tasks.append(base)
    return tasks


def _iter_lines(f, pos: int, end: Optional[int], limit: int) -> Iterator[tuple[int, Optional[bytes], bytes, int]]:
    """(offset, line or None if longer than `limit`, raw head, length) for each line of f from `pos`."""
    while end is None or pos < end:
        line = f.readline(limit + 1)
        if not line:
            return
        n = len(line)
        if n > limit and not line.endswith(b"\n"):
            head, line = line[: formats.RAW_KEEP_BYTES], None  # drop the big piece before reading on
            n += _skip_line(f)
            yield pos, None, head, n
        else:
            yield pos, line, line, n
        pos += n


def read_task(task: dict, source: SourceConfig) -> Iterator[dict]:
    """Yield every record of one planned task, good and bad, in file order."""
    fmt = task["format"]
    prefix = f"{source.name}/{task['rel']}"
    if fmt == "unsupported":
        yield formats.bad(prefix, source, "unsupported_format", b"", f"no reader for {task['rel']!r}; set `format`")
        return
    if fmt == "parquet":
        yield from formats.read_parquet(task, source, prefix)
        return
    if fmt == "txt_file":
        yield from _read_whole(task, source, prefix)
        return
    parse = formats.LINE_PARSERS[fmt]
    state = formats.LineState(task, source)
    pos = task["start"]
    f = open_stream(task["path"], task["compression"])
    try:
        if pos:
            f.seek(pos)
        lines = _iter_lines(f, pos, task["end"], source.max_record_bytes)
        while True:
            try:
                item = next(lines, None)
            except STREAM_ERRORS as e:
                reason = "truncated_stream" if isinstance(e, EOFError) else "corrupt_stream"
                yield formats.bad(f"{prefix}@{pos}", source, reason, b"", f"{type(e).__name__}: {e}")
                return
            if item is None:
                break
            pos, line, head, n = item
            yield from parse(state, f"{prefix}@{pos}", pos, line, head, n)
            pos += n
        yield from state.finish(f"{prefix}@{pos}")
    finally:
        f.close()


def _read_whole(task: dict, source: SourceConfig, rid: str) -> Iterator[dict]:
    limit = source.max_record_bytes
    f = open_stream(task["path"], task["compression"])
    try:
        try:
            data = f.read(limit + 1)
            total = len(data) + (sum(iter(lambda: len(f.read(READ_BLOCK)), 0)) if len(data) > limit else 0)
        except STREAM_ERRORS as e:
            reason = "truncated_stream" if isinstance(e, EOFError) else "corrupt_stream"
            yield formats.bad(rid, source, reason, b"", f"{type(e).__name__}: {e}")
            return
    finally:
        f.close()
    if total > limit:
        yield formats.bad(rid, source, "too_long", data[: formats.RAW_KEEP_BYTES], total_bytes=total)
        return
    yield formats.text_record(rid, source, data, strip_bom=True)
