"""Save a tokenizer directory that `transformers.AutoTokenizer.from_pretrained` loads.

For a SentencePiece model we write `tokenizer.model` and build `tokenizer.json` ourselves
from the ModelProto, instead of letting transformers 5 convert it, because its converters
do not reproduce SentencePiece on whitespace: `LlamaTokenizer` orders BPE merges by piece id
rather than by score (so "▁▁", score -1e9 in Llama-2, merges first) and its Metaspace
pre-tokenizer does not add the dummy prefix to text that starts with a space. Here:

- normalizer = the proto's normalizer spec: precompiled charsmap (nfkc models), extra
  whitespace removal, spaces -> "▁", the dummy prefix;
- model = BPE with merges ordered by the merged piece's score (what SentencePiece's BPE
  does), byte fallback as in the proto; or Unigram with the proto's scores;
- decoder = "▁" -> space, byte fallback, strip the dummy prefix;
- post-processor = BOS first / EOS last as the base's tokenizer_config says (default: BOS only).

`tokenizer_config.json` names `TokenizersBackend`, transformers 5's class that loads
`tokenizer.json` as written (a model-specific class such as `LlamaTokenizer` rebuilds the
pipeline in code and would lose the fixes above). The same directory also loads with
`SentencePieceBackend` (transformers 5's sentencepiece-based "slow" tokenizer) from
`tokenizer.model`; tests check that both give the same ids.

Pure tokenizers + sentencepiece (no transformers import needed to write the files).
"""

from __future__ import annotations

import json
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors

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
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    return normalizers.Sequence(steps)


def spm_to_tokenizer(proto: pb.ModelProto, *, add_bos: bool = True, add_eos: bool = False) -> Tokenizer:
    """A `tokenizers.Tokenizer` that encodes like SentencePiece with `proto`."""
    pieces = [(p.piece, p.score, p.type) for p in proto.pieces]
    spec = proto.trainer_spec
    unk = proto.pieces[spec.unk_id].piece
    if spec.model_type == pb.TrainerSpec.BPE:
        vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
        model = models.BPE(vocab=vocab, merges=bpe_merges(pieces), unk_token=unk, fuse_unk=True,
                           byte_fallback=spec.byte_fallback)
    else:
        model = models.Unigram([(p, s) for p, s, _ in pieces], unk_id=spec.unk_id, byte_fallback=spec.byte_fallback)
    tok = Tokenizer(model)
    tok.normalizer = _normalizer(proto.normalizer_spec)
    steps = [decoders.Replace("▁", " ")]
    if spec.byte_fallback:
        steps.append(decoders.ByteFallback())
    steps.append(decoders.Fuse())
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    special = [AddedToken(p, special=True, normalized=False) for p, _, t in pieces if t in (Piece.CONTROL, Piece.UNKNOWN)]
    user = [AddedToken(p, special=False, normalized=False) for p, _, t in pieces if t == Piece.USER_DEFINED]
    tok.add_special_tokens(special)
    tok.add_tokens(user)
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
