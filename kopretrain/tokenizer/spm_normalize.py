"""Which pieces of another SentencePiece model can the base's normalizer ever produce?

A SentencePiece model only ever sees text after its own normalizer: rule (`identity`,
`nmt_nfkc`, `nfkc`, ... compiled into `precompiled_charsmap`), spaces to "▁"
(`escape_whitespaces`), the dummy prefix, extra-whitespace removal. A piece of a model trained
with another rule can be a string the base never produces (NFKC turns the compatibility jamo
"ㅋ" into "ᄏ" and "Ａ" into "A"; a base that collapses spaces never shows "▁▁"): added as is it
would be dead. `piece_form` gives each piece's form under the base's normalizer, or why there
is none, using SentencePiece's own normalizer built from the base's spec (so the rule is
exactly the base's, charsmap included).

    form_of = piece_form(base_proto, extra_proto)
    form_of("ㅋㅋ")   # ("ᄏᄏ", "") under an NFKC base; ("ㅋㅋ", "") under identity (Llama-2)

Pure sentencepiece; tested in tests/tokenizer/test_merge_faithful.py.
"""

from __future__ import annotations

from typing import Callable

from sentencepiece import sentencepiece_model_pb2 as pb

NORMALIZER_FIELDS = ("name", "add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces")
"""The normalizer settings compared between the base and a merged model (and the charsmap)."""


def normalizer_differences(base: pb.ModelProto, extra: pb.ModelProto) -> dict[str, list]:
    """{setting: [base value, extra value]} for each normalizer setting the two models differ in."""
    a, b = base.normalizer_spec, extra.normalizer_spec
    diff = {f: [getattr(a, f), getattr(b, f)] for f in NORMALIZER_FIELDS if getattr(a, f) != getattr(b, f)}
    if a.precompiled_charsmap != b.precompiled_charsmap:
        diff["precompiled_charsmap"] = [f"{len(a.precompiled_charsmap)} bytes", f"{len(b.precompiled_charsmap)} bytes"]
    return diff


def piece_form(base: pb.ModelProto, extra: pb.ModelProto) -> Callable[[str], tuple[str | None, str]]:
    """A function: piece of `extra` -> (its form in text normalized by `base`, "") or (None, reason)."""
    import sentencepiece as spm

    spec = pb.NormalizerSpec()
    spec.CopyFrom(base.normalizer_spec)
    # Position-dependent steps say nothing about one piece inside a text: leave them out.
    spec.add_dummy_prefix = False
    spec.remove_extra_whitespaces = False
    holder = pb.ModelProto()
    holder.normalizer_spec.CopyFrom(spec)
    normalizer = spm.SentencePieceNormalizer(model_proto=holder.SerializeToString())
    extra_space = "▁" if extra.normalizer_spec.escape_whitespaces else " "
    base_space = "▁" if base.normalizer_spec.escape_whitespaces else " "
    collapses = base.normalizer_spec.remove_extra_whitespaces

    def form(piece: str) -> tuple[str | None, str]:
        out = normalizer.normalize(piece.replace(extra_space, " "))
        if not out:
            return None, "the base's normalizer deletes it"
        if collapses and base_space * 2 in out:
            return None, "has a run of spaces, which the base collapses (remove_extra_whitespaces)"
        return out, ""

    return form
