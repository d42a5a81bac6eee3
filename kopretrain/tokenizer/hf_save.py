"""Save a tokenizer directory that `transformers.AutoTokenizer.from_pretrained` loads.

For a SentencePiece model we write `tokenizer.model` and build `tokenizer.json` ourselves
from the ModelProto, instead of letting transformers 5 convert it, because its converters
do not reproduce SentencePiece on whitespace: `LlamaTokenizer` orders BPE merges by piece id
rather than by score (so "▁▁", score -1e9 in Llama-2, merges first) and its Metaspace
pre-tokenizer does not add the dummy prefix to text that starts with a space. Here:

- normalizer = the proto's normalizer spec: precompiled charsmap (nfkc models, then NFC, which
  composes jamo typed apart as SentencePiece does: "ㄱㅣ" -> "기"), extra whitespace removal,
  spaces -> "▁", the dummy prefix;
- model = BPE with merges ordered by the merged piece's score (what SentencePiece's BPE
  does), byte fallback as in the proto; or Unigram with the proto's scores;
- decoder = "▁" -> space, byte fallback, strip the dummy prefix;
- post-processor = BOS first / EOS last as the base's tokenizer_config says (default: BOS only).

User-defined symbols (`<mask>`, `<start_of_turn>`, merged `카카오톡`) are never split. SentencePiece
normalizes the whole text once (one dummy prefix, at the very start, even before a symbol) and
then keeps each symbol whole; `tokenizers` splits its added tokens out of the raw text first and
normalizes each remaining part on its own (a dummy prefix after every symbol, none before a
leading one). So when the normalizer depends on position (dummy prefix, extra-whitespace
removal), the symbols are not added tokens: the whole text is normalized, a `Split`
pre-tokenizer isolates the symbols, and the BPE model takes a word that is a piece whole
(`ignore_merges`; every regular piece is also what its own merges give, which is checked). A
word that is exactly the name of a piece no text produces (`<0x0A>`, `</s>` with special tokens
encoded as text, placeholders) is cut where SentencePiece's own segmentation of it starts, so
it stays text. Without a positional normalizer (Gemma-style) the symbols are plain added tokens.

`tokenizer_config.json` names `TokenizersBackend`, transformers 5's class that loads
`tokenizer.json` as written (a model-specific class such as `LlamaTokenizer` rebuilds the
pipeline in code and would lose the fixes above). The same directory also loads with
`SentencePieceBackend` (transformers 5's sentencepiece-based "slow" tokenizer) from
`tokenizer.model`; tests check that both give the same ids.

Pure tokenizers + sentencepiece (no transformers import needed to write the files).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

Piece = pb.ModelProto.SentencePiece
MERGEABLE = (Piece.NORMAL, Piece.USER_DEFINED)
CONFIG_KEYS_KEPT = ("pad_token", "add_bos_token", "add_eos_token", "model_max_length", "chat_template", "padding_side")
"""Keys copied from a base directory's tokenizer_config.json (special tokens come from the model)."""


def bpe_merges(pieces: list[tuple[str, float, int]]) -> list[tuple[str, str]]:
    """All (left, right) with left+right a piece and both parts pieces, highest score first."""
    vocab = {p: i for i, (p, _, t) in enumerate(pieces) if t in MERGEABLE or t == Piece.BYTE}
    mergeable = {p for p, _, t in pieces if t in MERGEABLE}
    found = []
    for i, (piece, score, kind) in enumerate(pieces):
        if kind not in MERGEABLE or len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in mergeable and right in mergeable:
                found.append((-score, i, -len(left), left, right))
    found.sort()
    assert all(left in vocab and right in vocab for *_, left, right in found)
    return [(left, right) for *_, left, right in found]


def _normalizer(spec: pb.NormalizerSpec):
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
        if "nfkc" in spec.name:
            # `tokenizers` applies the charsmap one grapheme at a time, so compatibility jamo typed
            # apart ("ㄱㅣ" -> "ᄀ" "ᅵ") stay apart, where SentencePiece's NFKC composes them ("기").
            steps.append(normalizers.NFC())
    if spec.remove_extra_whitespaces:
        # SentencePiece trims and collapses spaces only (a tab or newline stays); Strip would take all whitespace.
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    return normalizers.Sequence(steps)


def _onig_literal(text: str) -> str:
    """`text` as an Oniguruma pattern that matches it literally."""
    return "".join(ch if ch.isalnum() else f"\\x{{{ord(ch):X}}}" for ch in text)


def _symbol_pre_tokenizer(pieces: list[tuple[str, float, int]], bpe=None):
    """Split isolating user-defined symbols (longest first); for a BPE model (`bpe`, without
    ignore_merges) then a cut in any word that is exactly the name of a piece no text produces,
    where that model's own merges of it first break (so the cut changes no ids)."""
    user = sorted({p for p, _, t in pieces if t == Piece.USER_DEFINED}, key=lambda p: (-len(p), p))
    spaced = [p for p in user if "▁" in p or " " in p]
    if spaced:  # SentencePiece matches them in the raw text, where a space is not yet "▁"
        warnings.warn(f"tokenizer.json: user-defined symbols with a space or '▁' ({spaced[:3]}) are matched after "
                      "spaces become '▁', so text with spaces where they have '▁' may get other ids than tokenizer.model")
    steps = [pre_tokenizers.Split(Regex("|".join(map(_onig_literal, user))), behavior="isolated")]
    guards = []
    for name, _, kind in pieces if bpe is not None else ():
        if kind in MERGEABLE or len(name) < 2:
            continue
        first = bpe.tokenize(name)[0]
        cut = first.offsets[1] if first.offsets[1] < len(name) else 1
        guards.append(rf"\A{_onig_literal(name[:cut])}(?={_onig_literal(name[cut:])}\z)")
    if guards:
        steps.append(pre_tokenizers.Split(Regex("|".join(guards)), behavior="isolated"))
    return pre_tokenizers.Sequence(steps)


def _check_own_merges(model, pieces: list[tuple[str, float, int]]) -> None:
    """With `ignore_merges`, a word that is a piece is taken whole: the same as SentencePiece only
    if the merges rebuild every piece from its characters (true of Llama-2, Mistral and their
    expansions); say so when some piece is not."""
    odd = [p for i, (p, _, t) in enumerate(pieces) if t == Piece.NORMAL and [x.id for x in model.tokenize(p)] != [i]]
    if odd:
        warnings.warn(f"tokenizer.json: {len(odd)} pieces are not rebuilt by their own merges (e.g. {odd[:3]}); "
                      "a text segment that is exactly one of them may get other ids than tokenizer.model")


def spm_to_tokenizer(proto: pb.ModelProto, *, add_bos: bool = True, add_eos: bool = False) -> Tokenizer:
    """A `tokenizers.Tokenizer` that encodes like SentencePiece with `proto`."""
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    unk = proto.pieces[spec.unk_id].piece
    # User-defined symbols around which a position-dependent normalizer needs the whole text.
    whole_text = any(t == Piece.USER_DEFINED for _, _, t in pieces) and (norm.add_dummy_prefix or norm.remove_extra_whitespaces)
    if spec.model_type == pb.TrainerSpec.BPE:
        vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
        merges = bpe_merges(pieces)
        model = models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=spec.byte_fallback)
        if whole_text:
            _check_own_merges(model, pieces)
            pre_tokenizer = _symbol_pre_tokenizer(pieces, bpe=model)
            model = models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True,
                               byte_fallback=spec.byte_fallback, ignore_merges=True)
    else:
        model = models.Unigram([(p, s) for p, s, _ in pieces], unk_id=spec.unk_id, byte_fallback=spec.byte_fallback)
        if whole_text:
            pre_tokenizer = _symbol_pre_tokenizer(pieces)
    tok = Tokenizer(model)
    tok.normalizer = _normalizer(norm)
    if whole_text:
        tok.pre_tokenizer = pre_tokenizer
    steps = [decoders.Replace("▁", " ")]
    if spec.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if norm.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    special = [AddedToken(p, special=True, normalized=False) for p, _, t in pieces if t in (Piece.CONTROL, Piece.UNKNOWN)]
    tok.add_special_tokens(special)
    if not whole_text:
        tok.add_tokens([AddedToken(p, special=False, normalized=False) for p, _, t in pieces if t == Piece.USER_DEFINED])
    ends = [(pid, where) for pid, where, wanted in ((spec.bos_id, "first", add_bos), (spec.eos_id, "last", add_eos))
            if wanted and pid >= 0]
    if ends:
        first = " ".join(f"{proto.pieces[pid].piece}:{{}}" for pid, where in ends if where == "first")
        last = " ".join(f"{proto.pieces[pid].piece}:{{}}" for pid, where in ends if where == "last")
        single = " ".join(x for x in (first.format(0), "$A:0", last.format(0)) if x)
        pair = " ".join(x for x in (single, first.format(1), "$B:1", last.format(1)) if x)
        tok.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(proto.pieces[pid].piece, pid) for pid, _ in ends])
    return tok


def read_base_config(directory: Path | None) -> dict:
    """The kept keys of a base HF directory's tokenizer_config.json ({} when there is none)."""
    path = directory / "tokenizer_config.json" if directory else None
    if not path or not path.is_file():
        return {}
    config = json.loads(path.read_text(encoding="utf-8"))
    return {k: config[k] for k in CONFIG_KEYS_KEPT if k in config and config[k] is not None}


def _write_config(out_dir: Path, config: dict) -> None:
    config = {"tokenizer_class": "TokenizersBackend", "clean_up_tokenization_spaces": False, **config}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    special = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_spm_dir(proto: pb.ModelProto, out_dir: Path, base_config: dict | None = None) -> Path:
    """Write tokenizer.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base_config = dict(base_config or {})
    spec = proto.trainer_spec
    add_bos = bool(base_config.get("add_bos_token", True))
    add_eos = bool(base_config.get("add_eos_token", False))
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    spm_to_tokenizer(proto, add_bos=add_bos, add_eos=add_eos).save(str(out_dir / "tokenizer.json"))
    config = {**base_config, "add_bos_token": add_bos, "add_eos_token": add_eos}
    for key, pid in (("bos_token", spec.bos_id), ("eos_token", spec.eos_id), ("unk_token", spec.unk_id), ("pad_token", spec.pad_id)):
        if pid >= 0:
            config[key] = proto.pieces[pid].piece
    _write_config(out_dir, config)
    return out_dir


def save_json_dir(tokenizer_json: dict, out_dir: Path, special_tokens: dict, base_config: dict | None = None) -> Path:
    """Write a (byte-level BPE) tokenizer.json with its tokenizer_config.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    Tokenizer.from_str(json.dumps(tokenizer_json)).save(str(out_dir / "tokenizer.json"))  # validates it
    _write_config(out_dir, {**special_tokens, **(base_config or {})})
    return out_dir
