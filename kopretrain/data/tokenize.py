"""Tokenize clean text and pack it into fixed-length sequences per domain (pure; no Ray).

Two steps, so the expensive one parallelises and the order-dependent one stays exact:

1. `encode_with_eos(texts, tokenizer)` -> one flat token array, each document followed by EOS:
   exactly one EOS per document, the one added here. The text is encoded with
   `load_tokenizer(...).encode_batch`, which keeps special-token strings written in a document
   ("<|endoftext|>", "</s>", ...) as text, so they can never cut a document in two.
   Run per clean part (in parallel, by the Ray glue); `write_token_part_marker` marks a part done.
2. `pack_domain(part_files, out_dir, ...)` streams a domain's parts in order through a
   `ShardPacker`: documents run on across row and part boundaries (no padding), rows of exactly
   `seq_len` tokens fill shards of `rows_per_shard` rows, and index.json is written last in the
   format of `kopretrain.data.packed` (what `PackedDataset` and the trainer read). The tail that
   does not fill a last row is counted in the index as `num_tokens_dropped`, never hidden.

Memory: one chunk of a part (tokens are written to the open shard file as they come).

    from kopretrain.tokenizer.load import load_tokenizer
    tokens = encode_with_eos(["안녕하세요", "hello"], load_tokenizer("tokenizer.model"))  # ids, EOS after each

Tests: `.venv/bin/python -m pytest tests/data/test_tokenize.py -q`.
"""

from __future__ import annotations

import json
import os
from itertools import chain
from pathlib import Path
from typing import Iterable

import numpy as np

from kopretrain.data.packed import token_dtype, write_index


def encode_with_eos(texts: list[str], tokenizer, num_docs_per_batch: int = 1000) -> np.ndarray:
    """Token ids of `texts` in order, each document followed by `tokenizer.eos_id` (dtype fits the vocab).

    `tokenizer` is a `load_tokenizer(...)` (its `special_ids` never come from text): the EOS after
    each document is the only EOS, and no BOS or other special id is in the stream.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    parts = []
    for start in range(0, len(texts), num_docs_per_batch):
        ids = tokenizer.encode_batch(texts[start : start + num_docs_per_batch])
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        assert flat.size == 0 or (flat.min() >= 0 and flat.max() < max(tokenizer.vocab_size, tokenizer.eos_id + 1)), \
            "tokenizer produced an id outside its vocabulary"
        assert not np.isin(flat, np.fromiter(tokenizer.special_ids, np.int64)).any(), \
            "tokenizer turned text into a special id (load_tokenizer keeps special-token strings as text)"
        parts.append(np.insert(flat, np.cumsum(lengths), tokenizer.eos_id).astype(dtype))
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)


def token_part_marker(path: str | Path) -> Path:
    return Path(path).with_name(Path(path).name + ".json")


def write_token_part_marker(path: str | Path, meta: dict) -> None:
    """Write `<path>.json` once `<path>` (raw little-endian tokens) is complete: the part is done."""
    marker = token_part_marker(path)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(meta, sort_keys=True))
    os.replace(tmp, marker)


class ShardPacker:
    """Streams tokens into shards of `rows_per_shard` rows of `seq_len` tokens each.

    Tokens go straight to the open shard file (`shard-NNNNN.bin.tmp`, renamed when the shard is
    full), so memory is one incoming chunk whatever the shard size.
    """

    def __init__(self, directory: str | Path, seq_len: int, rows_per_shard: int, dtype: np.dtype):
        self.directory, self.seq_len, self.dtype = Path(directory), seq_len, np.dtype(dtype)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shard_tokens = rows_per_shard * seq_len
        self.fill = 0  # tokens in the open shard
        self.file = None
        self.shards: list[dict] = []
        self.num_tokens_in = 0

    def _name(self) -> str:
        return f"shard-{len(self.shards):05d}.bin"

    def add(self, tokens: np.ndarray) -> None:
        assert tokens.size == 0 or (tokens.min() >= 0 and tokens.max() <= np.iinfo(self.dtype).max), \
            "token id does not fit dtype"
        tokens = tokens.astype(self.dtype, copy=False)
        self.num_tokens_in += int(tokens.size)
        pos = 0
        while pos < tokens.size:
            if self.file is None:
                self.file = open(self.directory / (self._name() + ".tmp"), "wb")
            take = min(self.shard_tokens - self.fill, tokens.size - pos)
            tokens[pos : pos + take].tofile(self.file)
            self.fill += take
            pos += take
            if self.fill == self.shard_tokens:
                self._close(self.fill)

    def _close(self, num_tokens: int) -> None:
        """Close the open shard keeping its first `num_tokens` (whole rows); drop it if none."""
        tmp = self.directory / (self._name() + ".tmp")
        self.file.truncate(num_tokens * self.dtype.itemsize)
        self.file.close()
        self.file = None
        if num_tokens:
            os.replace(tmp, self.directory / self._name())
            self.shards.append({"file": self._name(), "num_sequences": num_tokens // self.seq_len})
        else:
            tmp.unlink()
        self.fill = 0

    def finish(self) -> int:
        """Close the last (partial) shard of whole rows; returns the tokens dropped (< seq_len)."""
        whole = self.fill // self.seq_len * self.seq_len
        dropped = self.fill - whole
        if self.file is not None:
            self._close(whole)
        return dropped


def pack_domain(part_files: Iterable[str | Path], out_dir: str | Path, *, seq_len: int, rows_per_shard: int,
                tokenizer_meta: dict, chunk_tokens: int = 1 << 20, **extra) -> dict:
    """Pack the token parts of one domain (in the given order) into `out_dir`; returns the index.

    `tokenizer_meta` = {"eos_id", "vocab_size", "fingerprint"}; `extra` goes into index.json
    (num_docs, num_chars, the prepare fingerprint, ...). Parts are read `chunk_tokens` at a time
    (1M = 2 MiB of uint16; the shards are the same for any value).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("shard-*.bin"), *out_dir.glob("shard-*.bin.tmp"), *out_dir.glob("index.json")]:
        stale.unlink()  # a half-written earlier attempt: index.json goes last, so start over
    dtype = token_dtype(tokenizer_meta["vocab_size"])
    packer = ShardPacker(out_dir, seq_len, rows_per_shard, dtype)
    for f in part_files:
        # plain reads of bounded chunks (a memory map would keep the whole part's pages resident)
        with open(f, "rb") as fh:
            while (chunk := np.fromfile(fh, dtype=dtype, count=chunk_tokens)).size:
                packer.add(chunk)
    dropped = packer.finish()
    return write_index(
        out_dir, seq_len=seq_len, dtype=dtype, eos_id=tokenizer_meta["eos_id"],
        vocab_size=tokenizer_meta["vocab_size"], tokenizer_fingerprint=tokenizer_meta["fingerprint"],
        shards=packer.shards, num_tokens_in=packer.num_tokens_in, num_tokens_dropped=dropped, **extra,
    )
