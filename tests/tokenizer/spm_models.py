"""Tiny SentencePiece models trained in-process for the merge and save tests (about a second each)."""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb


def train_model(texts: list[str], *, vocab_size: int, model_type: str = "bpe", rule: str = "identity",
                add_dummy_prefix: bool = True, remove_extra_whitespaces: bool = False,
                user_defined_symbols: tuple[str, ...] = (), byte_fallback: bool = True) -> pb.ModelProto:
    """A SentencePiece model trained on `texts` (one sentence per line) with these options."""
    spm.set_random_generator_seed(0)
    out = io.BytesIO()
    lines = [line for text in texts for line in text.splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, model_type=model_type, vocab_size=vocab_size,
        byte_fallback=byte_fallback, normalization_rule_name=rule, add_dummy_prefix=add_dummy_prefix,
        remove_extra_whitespaces=remove_extra_whitespaces, user_defined_symbols=list(user_defined_symbols),
        character_coverage=0.9995, allow_whitespace_only_pieces=True, split_digits=True, hard_vocab_limit=False,
        num_threads=2, minloglevel=2)
    proto = pb.ModelProto()
    proto.ParseFromString(out.getvalue())
    return proto


def english_lines(shared_dir: Path, name: str = "wikitext-2/valid.txt", limit: int = 20_000) -> list[str]:
    """Non-empty lines of an English corpus in ../shared/corpora/en."""
    lines = (shared_dir / "corpora/en" / name).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:limit]


def write_model(proto: pb.ModelProto, path: Path) -> Path:
    path.write_bytes(proto.SerializeToString())
    return path
