"""Merge the pieces of another SentencePiece model into a base model (Llama-2, Mistral, SOLAR, Yi, Gemma).

The base `ModelProto` is edited in place of being retrained: every base piece keeps its id,
score and type; new pieces are appended after the last base id. They come from a Korean
SentencePiece model trained by `train_spm` (the most frequent ones with Hangul, chosen by
`select`), or from an existing model given as `extra_model`: by default all of its pieces that
the base lacks, in its own order, as Chinese-LLaMA merged its Chinese model into Llama's.
User-defined symbols of that model stay user-defined (never split); each piece is added in the
form the base's normalizer gives it (`spm_normalize`), and pieces the base could never produce
are reported with the reason instead of being added.

Scores decide BPE merge order (SentencePiece merges the adjacent pair whose concatenation has
the highest score). New pieces get scores below every regular base piece, in their order, so
on any text the base's own merges happen first and the new ones after; only "sentinel" base
scores at or below -2**24 (Llama-2 gives whitespace runs such as "▁▁" -1e9) stay below them:
float32 cannot give distinct integer scores there. For a Unigram base, a new piece's score is
its log frequency on the Korean corpus (Viterbi needs log-probabilities, not ranks).

    proto = read_model("llama2/tokenizer.model")
    result = merge_pieces(proto, korean_proto, counts, num_new_tokens=14336, pad_to_multiple_of=64)
    result = merge_pieces(proto, other_proto, Counter(), num_new_tokens=None)   # all of its pieces
    result.report   # counts of pieces added, skipped, adjusted, unreachable (with reasons)

Pure sentencepiece + protobuf; tested in tests/tokenizer/test_merge_sentencepiece.py and
tests/tokenizer/test_merge_faithful.py.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as pb

from kopretrain.errors import UserError
from kopretrain.tokenizer.select import PLACEHOLDER, Selector, has_hangul, rank_candidates, round_up, select_tokens
from kopretrain.tokenizer.spm_normalize import normalizer_differences, piece_form

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
    """New pieces in id order (ids base_size .. base_size + len(added) - 1): user-defined symbols, then regular pieces."""
    num_placeholders: int
    """UNUSED pieces appended after `added` to reach the multiple."""
    num_candidates: int
    """Regular pieces that were eligible (not in the base, reachable; in `most_frequent` mode: seen in the corpus, Hangul)."""
    num_user_defined: int = 0
    """How many of `added` (the first ones) are user-defined symbols (never split)."""
    report: dict = field(default_factory=dict)
    """What was added, skipped and why (report.json's `merge`)."""


KIND_NAMES = {Piece.CONTROL: "control", Piece.UNKNOWN: "unknown", Piece.BYTE: "byte", UNUSED: "unused"}
MAX_LISTED = 50
"""Pieces listed by name per report entry (all are counted)."""


def _forms(base: pb.ModelProto, extra: pb.ModelProto, known: set[str], unreachable: list[dict]):
    """The extra model's user-defined symbols and regular pieces as the base's text shows them."""
    form_of = piece_form(base, extra)
    forms = [(p.piece, p.type, *form_of(p.piece)) for p in extra.pieces if p.type in (NORMAL, USER_DEFINED)]
    unchanged = {piece for piece, _, form, _ in forms if form == piece}
    symbols: list[str] = []
    regular: dict[str, str] = {}  # form -> the extra piece it comes from, in extra's order
    adjusted: list[tuple[str, str]] = []
    for piece, kind, form, why in forms:
        if form is None:
            unreachable.append({"piece": piece, "reason": why})
        elif kind == USER_DEFINED and form != piece:
            unreachable.append({"piece": piece, "form": form, "reason": "user-defined symbol that the base's "
                                "normalizer changes; tokenizer.json could not keep it whole"})
        elif kind == USER_DEFINED:
            symbols.append(piece)
        elif form == piece:
            regular.setdefault(form, piece)
        elif form in known or form in unchanged or form in regular or form in symbols:
            unreachable.append({"piece": piece, "form": form, "reason": "the base's normalizer turns it into a piece "
                                "already in the vocabulary or the model"})
        else:
            adjusted.append((piece, form))
            regular[form] = piece
    return symbols, regular, adjusted


def merge_pieces(
    base: pb.ModelProto,
    extra: pb.ModelProto,
    counts: Counter,
    *,
    num_new_tokens: int | None,
    pad_to_multiple_of: int = 1,
    require_hangul: bool = True,
) -> SpmMergeResult:
    """Append `extra`'s pieces to `base`, then UNUSED placeholders until the size is a multiple of
    `pad_to_multiple_of`.

    `num_new_tokens=None` (`all`): every user-defined symbol and regular piece of `extra` that the
    base lacks, in `extra`'s order (a piece's missing parts, which BPE needs to build it, just
    before it); no Hangul filter, no ranking: what Chinese-LLaMA's merge does.
    An int (`most_frequent`): up to that many, user-defined symbols first, then regular pieces by
    frequency in `counts` (`require_hangul`: only pieces with Hangul); more fill up to the multiple.
    Every piece is added in the form the base's normalizer gives its text (`spm_normalize`);
    pieces that the base can never produce are reported, not added.
    """
    if base.trainer_spec.model_type not in (BPE, UNIGRAM):
        raise UserError("only BPE and Unigram SentencePiece bases can be expanded")
    ranked_mode = num_new_tokens is not None
    keep = has_hangul if ranked_mode and require_hangul else (lambda t: True)
    base_pieces = [p.piece for p in base.pieces]
    known = set(base_pieces)
    unreachable: list[dict] = []
    symbols, regular, adjusted = _forms(base, extra, known, unreachable)
    in_base = [t for t in symbols if t in known] + [t for t in regular if t in known]
    symbols = [t for t in dict.fromkeys(symbols) if t not in known]
    new_regular = [t for t in regular if t not in known]
    without_hangul = [t for t in symbols + new_regular if not keep(t)]
    symbols = [t for t in symbols if keep(t)]
    form_counts: Counter = Counter()
    for form, piece in regular.items():
        form_counts[form] += counts.get(piece, 0)
    eligible = [t for t in new_regular if keep(t)]
    ranked = rank_candidates(form_counts, eligible) if ranked_mode else eligible
    score_of = {p.piece: p.score for p in extra.pieces}
    extra_score = {form: score_of[piece] for form, piece in regular.items()}

    def splits(piece: str) -> list[tuple[str, str]]:
        def usable(part: str) -> bool:
            return len(part) == 1 or part in known or part in extra_score

        options = [(piece[:i], piece[i:]) for i in range(1, len(piece)) if usable(piece[:i]) and usable(piece[i:])]
        return sorted(options, key=lambda lr: -(extra_score.get(lr[0], -1e12) + extra_score.get(lr[1], -1e12)))

    if ranked_mode:
        total = max(0, round_up(len(base_pieces) + num_new_tokens, pad_to_multiple_of) - len(base_pieces)) if num_new_tokens else 0
        symbols, symbols_left = symbols[:total], symbols[total:]
        target = total - len(symbols)
    else:
        target = 10**9
    known.update(symbols)
    selector = Selector(known, keep, splits, is_atom=lambda t: len(t) == 1)
    added = select_tokens(ranked, selector, target) if target > 0 else []
    if not ranked_mode:
        unreachable += [{"piece": regular[t], "form": t, "reason": "no split into two pieces of the vocabulary, "
                         "which BPE needs to build it"} for t in ranked if t not in selector.known]
    size = len(base_pieces) + len(symbols) + len(added)
    num_placeholders = round_up(size, pad_to_multiple_of) - size

    merged = pb.ModelProto()
    merged.CopyFrom(base)
    for piece in symbols:
        merged.pieces.append(Piece(piece=piece, score=0.0, type=USER_DEFINED))
    for piece, score in zip(added, _new_scores(base, added, form_counts)):
        merged.pieces.append(Piece(piece=piece, score=score, type=NORMAL))
    for i in range(num_placeholders):
        name = PLACEHOLDER.format(i)
        assert name not in known
        merged.pieces.append(Piece(piece=name, score=0.0, type=UNUSED))
    merged.trainer_spec.vocab_size = len(merged.pieces)
    report = {
        "mode": "most_frequent" if ranked_mode else "all",
        "num_extra_pieces": len(extra.pieces),
        "num_added_regular": len(added),
        "num_added_parts": sum(1 for t in added if t not in regular),
        "num_added_user_defined": len(symbols),
        "num_placeholders": num_placeholders,
        "num_skipped_in_base": len(in_base),
        "num_normalization_adjusted": sum(1 for _, f in adjusted if f in selector.known),
        "normalization_adjusted": [[p, f] for p, f in adjusted if f in selector.known][:MAX_LISTED],
        "num_unreachable": len(unreachable),
        "unreachable_by_reason": dict(Counter(u["reason"] for u in unreachable)),
        "unreachable": unreachable[:MAX_LISTED],
        "not_merged_types": dict(Counter(KIND_NAMES[p.type] for p in extra.pieces if p.type in KIND_NAMES)),
        "normalizer_differences": normalizer_differences(base, extra),
    }
    if ranked_mode:
        report["num_without_hangul"] = len(without_hangul)
        report["num_not_selected"] = len([t for t in ranked if t not in selector.known]) + len(symbols_left)
        report["num_never_seen"] = len(eligible) - len(ranked)
    return SpmMergeResult(merged, symbols + added, num_placeholders, len(ranked), len(symbols), report)
