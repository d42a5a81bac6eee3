"""Merge Korean pieces into a SentencePiece base model (Llama-2, Mistral, SOLAR, Yi, Gemma).

The base `ModelProto` is edited in place of being retrained: every base piece keeps its id,
score and type; new pieces are appended after the last base id. New pieces come from a Korean
SentencePiece model (trained by `train_spm`, or an existing one given as `extra_model`, as
Chinese-LLaMA merged its Chinese model into Llama's), chosen by `select`.

Scores decide BPE merge order (SentencePiece merges the adjacent pair whose concatenation has
the highest score). New pieces get scores below every regular base piece, so on any text the
base's own merges happen first and the Korean ones after; only "sentinel" base scores at or
below -2**24 (Llama-2 gives whitespace runs such as "▁▁" -1e9) stay below them: float32
cannot give distinct integer scores there. For a Unigram base, a new piece's score is its
log frequency on the Korean corpus (Viterbi needs log-probabilities, not ranks).

    proto = read_model("llama2/tokenizer.model")
    result = merge_pieces(proto, korean_proto, counts, num_new_tokens=14336, pad_to_multiple_of=64)

Pure sentencepiece + protobuf; tested in tests/tokenizer/test_merge_sentencepiece.py.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as pb

from kopretrain.errors import UserError
from kopretrain.tokenizer.select import PLACEHOLDER, Selector, has_hangul, rank_candidates, round_up, select_tokens

Piece = pb.ModelProto.SentencePiece
NORMAL, USER_DEFINED, UNUSED = Piece.NORMAL, Piece.USER_DEFINED, Piece.UNUSED
BPE, UNIGRAM = pb.TrainerSpec.BPE, pb.TrainerSpec.UNIGRAM
SENTINEL_SCORE = -float(2**24)


def read_model(path: str | Path) -> pb.ModelProto:
    proto = pb.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception:  # protobuf raises DecodeError or RuntimeWarning-ish errors depending on backend
        raise UserError(f"not a SentencePiece model: {path}") from None
    if not proto.pieces:
        raise UserError(f"SentencePiece model has no pieces: {path}")
    return proto


def piece_counts(korean: pb.ModelProto, texts: list[str]) -> Counter:
    """How often each piece of `korean` occurs when it segments `texts`."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=korean.SerializeToString())
    counts: Counter = Counter()
    for i in range(0, len(texts), 4096):
        for pieces in sp.encode(texts[i : i + 4096], out_type=str):
            counts.update(pieces)
    return counts


def _new_scores(base: pb.ModelProto, added: list[str], counts: Counter) -> list[float]:
    if base.trainer_spec.model_type == UNIGRAM:
        total = sum(counts.values()) or 1
        floor = min(p.score for p in base.pieces if p.type == NORMAL)
        return [min(floor, math.log(max(counts.get(t, 0), 1) / total)) for t in added]
    regular = [p.score for p in base.pieces if p.type == NORMAL and p.score > SENTINEL_SCORE]
    start = math.floor(min(regular, default=0.0)) - 1.0
    assert start - len(added) > SENTINEL_SCORE, "too many pieces for distinct float32 scores"
    return [start - i for i in range(len(added))]


@dataclass
class SpmMergeResult:
    proto: pb.ModelProto
    """The merged model (base pieces first, unchanged)."""
    added: list[str]
    """New pieces in id order (ids base_size .. base_size + len(added) - 1)."""
    num_placeholders: int
    """UNUSED pieces appended after `added` to reach the multiple."""
    num_candidates: int
    """Korean pieces that were eligible (seen in the corpus, not in the base)."""


def merge_pieces(
    base: pb.ModelProto,
    korean: pb.ModelProto,
    counts: Counter,
    *,
    num_new_tokens: int,
    pad_to_multiple_of: int = 1,
    require_hangul: bool = True,
) -> SpmMergeResult:
    """Append up to `num_new_tokens` Korean pieces to `base` (then more of the next most frequent
    ones, or UNUSED placeholders, until the size is a multiple of `pad_to_multiple_of`)."""
    if base.trainer_spec.model_type not in (BPE, UNIGRAM):
        raise UserError("only BPE and Unigram SentencePiece bases can be expanded")
    base_pieces = [p.piece for p in base.pieces]
    known = set(base_pieces)
    korean_score = {p.piece: p.score for p in korean.pieces if p.type == NORMAL}
    ranked = [t for t in rank_candidates(counts, korean_score) if t not in known]
    ranked = [t for t in ranked if has_hangul(t)] if require_hangul else ranked

    def splits(piece: str) -> list[tuple[str, str]]:
        def usable(part: str) -> bool:
            return len(part) == 1 or part in known or part in korean_score

        options = [(piece[:i], piece[i:]) for i in range(1, len(piece)) if usable(piece[:i]) and usable(piece[i:])]
        return sorted(options, key=lambda lr: -(korean_score.get(lr[0], -1e12) + korean_score.get(lr[1], -1e12)))

    accept = has_hangul if require_hangul else (lambda t: True)
    selector = Selector(known, accept, splits, is_atom=lambda t: len(t) == 1)
    target = round_up(len(base_pieces) + num_new_tokens, pad_to_multiple_of) - len(base_pieces)
    added = select_tokens(ranked, selector, target) if num_new_tokens > 0 else []
    num_placeholders = round_up(len(base_pieces) + len(added), pad_to_multiple_of) - len(base_pieces) - len(added)

    merged = pb.ModelProto()
    merged.CopyFrom(base)
    for piece, score in zip(added, _new_scores(base, added, counts)):
        merged.pieces.append(Piece(piece=piece, score=score, type=NORMAL))
    for i in range(num_placeholders):
        name = PLACEHOLDER.format(i)
        assert name not in known
        merged.pieces.append(Piece(piece=name, score=0.0, type=UNUSED))
    merged.trainer_spec.vocab_size = len(merged.pieces)
    return SpmMergeResult(merged, added, num_placeholders, len(ranked))
