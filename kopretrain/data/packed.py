"""The packed-token format that `prepare` writes and `train` reads.

A domain's directory (`<tokens_dir>/<domain>/`) holds:

    index.json          {"format": "kopretrain-packed-v1", "seq_len": 128, "dtype": "uint16",
                         "eos_id": 2, "vocab_size": 9602, "tokenizer_fingerprint": "...",
                         "num_sequences": N, "num_tokens": N * seq_len,
                         "shards": [{"file": "shard-00000.bin", "num_sequences": n0}, ...], ...}
    shard-00000.bin     n0 x seq_len tokens, little-endian `dtype`, row-major, no header
    ...

Documents are concatenated, each followed by EOS, and cut into rows of exactly `seq_len`
tokens (no padding: every token is trained on). Sequence i of the domain is row
`i - offset(shard)` of the shard that holds it, so a training job can record "next sequence
index" and resume exactly. index.json is written last (atomically): a directory without it
is incomplete.

Pure numpy; no Ray.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FORMAT = "kopretrain-packed-v1"
INDEX = "index.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (halves disk and page cache), else uint32."""
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def pack(docs: Iterable[Sequence[int]], seq_len: int, eos_id: int, carry: Sequence[int] = ()) -> tuple[np.ndarray, list[int]]:
    """Concatenate `docs` (each + EOS) after `carry` and cut into full rows of `seq_len`.

    Returns (rows [n, seq_len] int64, leftover tokens that did not fill a row).
    """
    stream: list[int] = list(carry)
    for doc in docs:
        stream.extend(doc)
        stream.append(eos_id)
    n = len(stream) // seq_len
    rows = np.asarray(stream[: n * seq_len], dtype=np.int64).reshape(n, seq_len)
    return rows, stream[n * seq_len :]


def write_shard(directory: str | Path, index: int, rows: np.ndarray, dtype: np.dtype) -> dict:
    """Write rows as `shard-<index>.bin` (atomically); returns its index entry."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"shard-{index:05d}.bin"
    tmp = directory / (name + ".tmp")
    assert rows.ndim == 2
    assert rows.size == 0 or (rows.min() >= 0 and rows.max() <= np.iinfo(dtype).max), "token id does not fit dtype"
    rows.astype(dtype).tofile(tmp)
    os.replace(tmp, directory / name)
    return {"file": name, "num_sequences": int(rows.shape[0])}


def write_index(directory: str | Path, *, seq_len: int, dtype: np.dtype, eos_id: int, vocab_size: int,
                tokenizer_fingerprint: str, shards: list[dict], **extra) -> dict:
    """Write index.json last, atomically. `extra` adds fields (num_docs, num_chars, ...)."""
    directory = Path(directory)
    num_sequences = sum(s["num_sequences"] for s in shards)
    index = {
        "format": FORMAT,
        "seq_len": seq_len,
        "dtype": np.dtype(dtype).name,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "tokenizer_fingerprint": tokenizer_fingerprint,
        "num_sequences": num_sequences,
        "num_tokens": num_sequences * seq_len,
        "shards": shards,
        **extra,
    }
    tmp = directory / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, directory / INDEX)
    return index


def _index_problem(index) -> str:
    """What is wrong with a parsed index.json ('' = nothing): the fields `train` reads, their types."""
    if not isinstance(index, dict):
        return "is not a packed-token index (a JSON object)"
    missing = [k for k in ("format", "seq_len", "dtype", "vocab_size", "num_sequences", "shards") if k not in index]
    if missing:
        return f"lacks {', '.join(missing)}"
    if index["format"] != FORMAT:
        return f"has format {index['format']!r}, not {FORMAT!r}"

    def count(v, low: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    for key, low in (("seq_len", 1), ("vocab_size", 1), ("num_sequences", 0)):
        if not count(index[key], low):
            return f"has {key} {index[key]!r}, not an integer >= {low}"
    if index["dtype"] not in ("uint16", "uint32"):
        return f"has dtype {index['dtype']!r}, not uint16 or uint32"
    shards = index["shards"]
    if not isinstance(shards, list) or not all(
            isinstance(s, dict) and isinstance(s.get("file"), str) and s["file"] and Path(s["file"]).name == s["file"]
            and count(s.get("num_sequences"), 0) for s in shards):
        return 'has a malformed shards list (each: {"file": "shard-00000.bin", "num_sequences": n})'
    listed = sum(s["num_sequences"] for s in shards)
    if listed != index["num_sequences"]:
        return f"says num_sequences {index['num_sequences']}, but its shards list {listed}"
    return ""


def read_index(directory: str | Path) -> dict:
    """`<directory>/index.json`, checked: valid JSON, the fields `train` reads well-typed, every shard
    file present and exactly `num_sequences x seq_len` tokens long (os.stat only). A one-line
    UserError naming the file otherwise (the caller prefixes its key)."""
    from kopretrain.errors import UserError

    directory = Path(directory)
    path = directory / INDEX
    redo = "; re-run `kopretrain prepare`"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid JSON (not UTF-8 text){redo}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}){redo}") from None
    problem = _index_problem(index)
    if problem:
        raise UserError(f"{path} {problem}{redo}")
    row_bytes = index["seq_len"] * np.dtype(index["dtype"]).itemsize
    for s in index["shards"]:
        shard = directory / s["file"]
        try:
            size = shard.stat().st_size
        except OSError:
            raise UserError(f"{shard} is missing (listed in {INDEX}){redo}") from None
        if size != s["num_sequences"] * row_bytes:
            held = (f"{size // row_bytes} sequences" if size % row_bytes == 0
                    else f"{size} bytes, not a whole number of {index['seq_len']}-token {index['dtype']} rows")
            raise UserError(f"{shard} holds {held}, {INDEX} says {s['num_sequences']}{redo}")
    return index


@dataclass
class PackedDataset:
    """Random access to the packed sequences of one domain (memory-mapped, read-only)."""

    directory: Path

    def __post_init__(self):
        self.directory = Path(self.directory)
        path = self.directory / INDEX
        if not path.exists():
            from kopretrain.errors import UserError

            raise UserError(f"no packed tokens at {self.directory} (missing {INDEX}; run `kopretrain prepare` with tokenizer.path set)")
        self.index = read_index(self.directory)
        self.seq_len = int(self.index["seq_len"])
        self.dtype = np.dtype(self.index["dtype"]).newbyteorder("<")
        self._maps: list[np.memmap | None] = [None] * len(self.index["shards"])
        self._offsets = np.cumsum([0] + [s["num_sequences"] for s in self.index["shards"]])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def num_tokens(self) -> int:
        return len(self) * self.seq_len

    def _shard(self, k: int) -> np.ndarray:
        if self._maps[k] is None:
            s = self.index["shards"][k]
            self._maps[k] = np.memmap(self.directory / s["file"], dtype=self.dtype, mode="r",
                                      shape=(s["num_sequences"], self.seq_len))
        return self._maps[k]

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return np.asarray(self._shard(k)[i - self._offsets[k]], dtype=np.int64)
