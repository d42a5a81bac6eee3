"""Tokenize + pack (pure): EOS after every document, exact sequence content across row, part
and shard boundaries, an index a trainer can resume from, byte-identical re-packing."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from kopretrain.data.packed import PackedDataset
from kopretrain.data.tokenize import ShardPacker, encode_with_eos, pack_domain, write_token_part_marker
from kopretrain.paths import DATA_DIR
from kopretrain.tokenizer.load import load_tokenizer


@pytest.fixture(scope="module")
def docs() -> list[str]:
    lines = (DATA_DIR / "ko" / "news_comments.txt").read_text(encoding="utf-8").splitlines()
    en = (DATA_DIR / "en" / "botchan.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines[:300] + en[:100] if line.strip()]


@pytest.fixture(scope="module")
def tokenizer_paths(tmp_path_factory, docs) -> dict[str, str]:
    """The three kinds `tokenizer.path` accepts, built in-process: an HF directory, its
    tokenizer.json, and a SentencePiece model."""
    import sentencepiece as spm

    from tests.helpers import make_tiny_bpe_tokenizer

    root = tmp_path_factory.mktemp("tok")
    make_tiny_bpe_tokenizer(docs, vocab_size=400).save_pretrained(root / "hf")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(docs), model_writer=model, vocab_size=1000, minloglevel=2,
                                   character_coverage=0.98, byte_fallback=True, num_threads=1)
    (root / "sp.model").write_bytes(model.getvalue())
    return {"hf": str(root / "hf"), "tokenizer.json": str(root / "hf" / "tokenizer.json"), "sentencepiece": str(root / "sp.model")}


@pytest.mark.parametrize("kind", ["hf", "tokenizer.json", "sentencepiece"])
def test_every_document_is_followed_by_eos(kind, tokenizer_paths, docs):
    tok = load_tokenizer(tokenizer_paths[kind])
    assert tok.kind == kind
    flat = encode_with_eos(docs[:50], tok, num_docs_per_batch=7)
    expected = [i for d in docs[:50] for i in tok.encode_batch([d])[0] + [tok.eos_id]]
    assert flat.tolist() == expected
    assert flat.dtype == np.uint16 and (flat == tok.eos_id).sum() == 50  # EOS is never a text token
    assert tok.decode(flat[: len(tok.encode_batch([docs[0]])[0])].tolist()).strip() == docs[0].strip()


def _parts(tmp_path, tok, docs, sizes):
    """Token parts of consecutive document slices, as the Ray glue writes them."""
    files, start = [], 0
    for k, n in enumerate(sizes):
        f = tmp_path / f"part-{k:05d}.bin"
        tokens = encode_with_eos(docs[start : start + n], tok)
        f.write_bytes(tokens.tobytes())
        write_token_part_marker(f, {"num_docs": n})
        files.append(f)
        start += n
    return files


def test_packing_is_exact_across_rows_parts_and_shards(tmp_path, tokenizer_paths, docs):
    tok = load_tokenizer(tokenizer_paths["tokenizer.json"])
    files = _parts(tmp_path, tok, docs, [120, 0, 90, 150])
    stream = [i for d in docs[:360] for i in tok.encode_batch([d])[0] + [tok.eos_id]]
    seq_len, rows_per_shard = 64, 5
    meta = {"eos_id": tok.eos_id, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint}
    index = pack_domain(files, tmp_path / "ko", seq_len=seq_len, rows_per_shard=rows_per_shard, tokenizer_meta=meta,
                        chunk_tokens=100, num_docs=360)
    n = len(stream) // seq_len
    assert index["num_sequences"] == n and index["num_tokens"] == n * seq_len
    assert index["num_tokens_dropped"] == len(stream) - n * seq_len and index["num_tokens_in"] == len(stream)
    assert [s["num_sequences"] for s in index["shards"]] == [rows_per_shard] * (n // rows_per_shard) + ([n % rows_per_shard] if n % rows_per_shard else [])
    assert index["tokenizer_fingerprint"] == tok.fingerprint and index["num_docs"] == 360
    ds = PackedDataset(tmp_path / "ko")
    rows = [ds[i].tolist() for i in range(len(ds))]
    assert rows == [stream[i * seq_len : (i + 1) * seq_len] for i in range(n)]
    # resume: a fresh reader started at sequence k sees exactly the rest, whatever shard k is in
    for k in (0, 3, rows_per_shard, n - 1):
        again = PackedDataset(tmp_path / "ko")
        assert [again[i].tolist() for i in range(k, len(again))] == rows[k:]


def test_repacking_is_byte_identical_and_replaces_stale_shards(tmp_path, tokenizer_paths, docs):
    tok = load_tokenizer(tokenizer_paths["sentencepiece"])
    files = _parts(tmp_path, tok, docs, [200, 200])
    meta = {"eos_id": tok.eos_id, "vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint}
    out = tmp_path / "en"
    first = pack_domain(files, out, seq_len=32, rows_per_shard=50, tokenizer_meta=meta)
    snapshot = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    (out / "shard-00099.bin").write_bytes(b"left over from a killed run")
    second = pack_domain(files, out, seq_len=32, rows_per_shard=50, tokenizer_meta=meta)
    assert first == second
    assert {p.name: p.read_bytes() for p in sorted(out.iterdir())} == snapshot
    assert json.loads((out / "index.json").read_text())["format"] == "kopretrain-packed-v1"


def test_shard_packer_keeps_the_tail_out_and_counts_it(tmp_path):
    packer = ShardPacker(tmp_path, seq_len=4, rows_per_shard=2, dtype=np.uint16)
    packer.add(np.arange(10, dtype=np.uint16))
    packer.add(np.arange(10, 13, dtype=np.uint16))
    assert packer.finish() == 1  # 13 tokens = 3 rows of 4 + 1
    assert [s["num_sequences"] for s in packer.shards] == [2, 1]
    assert np.fromfile(tmp_path / "shard-00001.bin", dtype="<u2").tolist() == [8, 9, 10, 11]


def test_shard_packer_streams_to_disk_instead_of_buffering_a_shard(tmp_path):
    """Memory stays one chunk: tokens are on disk as soon as they are added, not when a shard fills."""
    packer = ShardPacker(tmp_path, seq_len=4, rows_per_shard=1_000_000, dtype=np.uint16)
    packer.add(np.arange(10, dtype=np.uint16))
    packer.file.flush()
    assert np.fromfile(tmp_path / "shard-00000.bin.tmp", dtype="<u2").tolist() == list(range(10))
    assert packer.finish() == 2
    assert not list(tmp_path.glob("*.tmp"))
    assert np.fromfile(tmp_path / "shard-00000.bin", dtype="<u2").tolist() == list(range(8))
    assert packer.shards == [{"file": "shard-00000.bin", "num_sequences": 2}]


def test_shard_packer_writes_nothing_for_less_than_a_row(tmp_path):
    packer = ShardPacker(tmp_path, seq_len=4, rows_per_shard=2, dtype=np.uint16)
    packer.add(np.arange(3, dtype=np.int64))
    assert packer.finish() == 3
    assert packer.shards == [] and not list(tmp_path.iterdir())


def test_shard_packer_refuses_ids_that_do_not_fit_its_dtype(tmp_path):
    packer = ShardPacker(tmp_path, seq_len=4, rows_per_shard=2, dtype=np.uint16)
    with pytest.raises(AssertionError, match="does not fit"):
        packer.add(np.array([1, 70000], dtype=np.int64))
