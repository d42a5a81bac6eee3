"""One way to load every tokenizer kind kopretrain accepts, for encoding text in bulk.

`tokenizer.path` may be:
- a SentencePiece `*.model` file (Llama-2, Mistral, SOLAR, Yi, Gemma style);
- a Hugging Face `tokenizer.json` file (byte-level BPE: Llama-3 converted, Polyglot-Ko, Qwen);
- a Hugging Face tokenizer directory (anything `AutoTokenizer.from_pretrained` loads; one holding
  a SentencePiece tokenizer.model that kopretrain did not write encodes with that model, see
  `_spm_dir_model`);
- Llama-3's tiktoken `tokenizer.model` (converted in memory, see `tiktoken_convert`).

`load_tokenizer(path).encode_batch(texts)` is THE way kopretrain encodes documents (packing in
`prepare`, token efficiency in `tokenizer`, `eval`). Two guarantees, for every kind above:

- no BOS/EOS is added (packing appends the one EOS a document ends with);
- special-token strings written in the text stay text: "<|endoftext|>", "</s>", "<unk>" or
  "<|begin_of_text|>" inside a document are tokenized like any other characters (what
  SentencePiece does with control symbols), never turned into the tokenizer's special ids.
  Added tokens that are *not* special (SentencePiece user-defined symbols, `AddedToken(...,
  special=False)`) are still matched whole, as the tokenizer intends. So the same tokenizer gives
  the same ids as a SentencePiece `.model` and as an HF directory saved from it.

`special_ids` lists the ids document text never encodes to; `load_tokenizer` checks it by encoding
the special-token strings themselves (a tokenizer that cannot keep them text is a UserError).
The fingerprint (sha256 of the tokenizer files) is stored with packed tokens, so tokens made
with one tokenizer are never silently trained with another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from kopretrain.errors import UserError

EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>")
BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>")


def fingerprint_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class TextTokenizer:
    path: str
    kind: str
    """'sentencepiece', 'tokenizer.json', 'hf' or 'tiktoken'."""
    vocab_size: int
    eos_id: int
    bos_id: int | None
    fingerprint: str
    special_ids: frozenset[int]
    """Ids of the special (control) tokens: BOS, EOS, pad, ...; never produced from document text.
    Not unk, which may stand for characters the vocabulary lacks."""
    _encode: Callable[[list[str]], list[list[int]]] = field(repr=False)
    _decode: Callable[[list[int]], str] = field(repr=False)
    encoder_version: ClassVar[int] = 3
    """Bumped when `encode_batch` gives other ids for the same tokenizer files (2: special-token
    strings in text stay text; 3: an HF directory with a SentencePiece tokenizer.model that
    kopretrain did not write encodes with that model); `prepare` keys its tokens on it, so older
    tokens are redone."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text: no BOS/EOS added, special-token strings in the text encoded as text."""
        return self._encode(list(texts))

    def decode(self, ids: list[int]) -> str:
        return self._decode(list(ids))

    def __getstate__(self) -> dict[str, Any]:  # picklable for Ray: reload from path
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(load_tokenizer(state["path"]).__dict__)


def batch_encoder(tok, named_ids=()) -> Callable[[list[str]], list[list[int]]]:
    """Batch encoding with a `tokenizers.Tokenizer` (its settings changed in place): no BOS/EOS
    added, and special-token strings in the text tokenized as text.

    `encode_special_tokens = True` makes the tokenizer skip its special added tokens when it
    splits the text (non-special added tokens are still matched whole). Added tokens among
    `named_ids` (EOS, BOS, ... as the tokenizer's config names them) that are not marked special
    are marked special first, so they too stay text. A Unigram model encodes through a copy
    (`_unigram_for_text`).
    `encode_batch_fast` skips computing character offsets, which packing never needs: about
    1.45x faster on the Korean sample with identical ids (tests/tokenizer/test_load.py).
    """
    from tokenizers import AddedToken

    unmarked = [a for i, a in tok.get_added_tokens_decoder().items() if i in set(named_ids) and not a.special]
    if unmarked:
        tok.add_special_tokens([AddedToken(a.content, single_word=a.single_word, lstrip=a.lstrip, rstrip=a.rstrip,
                                           normalized=a.normalized, special=True) for a in unmarked])
    if type(tok.model).__name__ == "Unigram":
        tok = _unigram_for_text(tok, set(special_ids_of(tok, named_ids)) | {_unk_id(tok)})
    tok.encode_special_tokens = True
    fast = getattr(tok, "encode_batch_fast", None) or tok.encode_batch

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in fast(texts, add_special_tokens=False)]

    return encode


def _unk_id(tok) -> int | None:
    if type(tok.model).__name__ == "Unigram":
        return json.loads(tok.to_str())["model"].get("unk_id")
    unk = getattr(tok.model, "unk_token", None)
    return tok.token_to_id(unk) if unk else None


def special_ids_of(tok, named_ids=()) -> frozenset[int]:
    """A `tokenizers.Tokenizer`'s special added tokens and `named_ids`, less its model's unk."""
    ids = {i for i, a in tok.get_added_tokens_decoder().items() if a.special} | {i for i in named_ids if i is not None}
    return frozenset(ids - {_unk_id(tok)})


def _unigram_for_text(tok, ids: set[int]):
    """An encode-only copy of a Unigram `tok` in which the pieces `ids` never match text.

    SentencePiece's Unigram segments text with normal and user-defined pieces only, so "</s>" or
    "<unk>" written in text are spelled out; `tokenizers`' Unigram matches every vocabulary entry
    (and a control piece scores 0, the best), so it would take them whole. The copy renames those
    entries to a name no text has (the id between two U+10FFFF, a Unicode noncharacter); ids and
    scores are unchanged, so other text keeps its segmentation. Decoding uses the original.
    (Byte pieces keep their names: byte fallback looks them up by name.)
    """
    from tokenizers import Tokenizer, models

    copy = Tokenizer.from_str(tok.to_str())
    spec = json.loads(tok.to_str())["model"]
    vocab = [(f"\U0010ffff{i}\U0010ffff" if i in ids else piece, score) for i, (piece, score) in enumerate(spec["vocab"])]
    copy.model = models.Unigram(vocab, spec.get("unk_id"), spec.get("byte_fallback", False))
    return copy


def _special_id(lookup: Callable[[str], int | None], candidates) -> int | None:
    for tok in candidates:
        i = lookup(tok)
        if i is not None:
            return i
    return None


def _load_sentencepiece(p: Path) -> TextTokenizer:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(p))
    eos = sp.eos_id()
    if eos < 0:
        raise UserError(f"SentencePiece model has no EOS piece: {p}")
    # SentencePiece spells control symbols (<s>, </s>) and <unk> written in text out as text,
    # and matches user-defined symbols whole: already the rule, nothing to switch.
    special = frozenset(i for i in range(sp.get_piece_size()) if sp.is_control(i))
    return TextTokenizer(
        str(p), "sentencepiece", sp.get_piece_size(), eos, sp.bos_id() if sp.bos_id() >= 0 else None,
        fingerprint_files([p]), special, lambda texts: sp.encode(texts), lambda ids: sp.decode(ids),
    )


def _load_tokenizer_json(p: Path) -> TextTokenizer:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(p))
    eos = _special_id(tok.token_to_id, EOS_CANDIDATES)
    if eos is None:
        raise UserError(f"cannot find an EOS token ({', '.join(EOS_CANDIDATES)}) in {p}")

    bos = _special_id(tok.token_to_id, BOS_CANDIDATES)
    encode = batch_encoder(tok, (eos, bos))
    return TextTokenizer(
        str(p), "tokenizer.json", tok.get_vocab_size(with_added_tokens=True), eos, bos, fingerprint_files([p]),
        special_ids_of(tok, (eos, bos)), encode,
        lambda ids: tok.decode(ids, skip_special_tokens=False),
    )


def _load_tiktoken(p: Path) -> TextTokenizer:
    from tokenizers import Tokenizer

    from kopretrain.tokenizer.tiktoken_convert import tiktoken_to_json

    tok = Tokenizer.from_str(json.dumps(tiktoken_to_json(p)))
    eos, bos = tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|begin_of_text|>")
    encode = batch_encoder(tok, (eos, bos))
    return TextTokenizer(
        str(p), "tiktoken", tok.get_vocab_size(with_added_tokens=True), eos, bos, fingerprint_files([p]),
        special_ids_of(tok, (eos, bos)), encode,
        lambda ids: tok.decode(ids, skip_special_tokens=False),
    )


def _load_hf_dir(p: Path) -> TextTokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(p))
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer in {p} has no eos_token")
    files = [f for f in p.iterdir() if f.is_file() and (f.name.startswith("tokenizer") or f.name.startswith("special_tokens"))]

    named = [i for i in tok.all_special_ids if i != tok.unk_token_id]
    backend = getattr(tok, "_tokenizer", None)  # the Rust tokenizer behind a fast HF tokenizer
    if backend is not None and hasattr(backend, "encode_batch"):
        encode = batch_encoder(backend, named)
        special = special_ids_of(backend, named)
    else:  # a Python/SentencePiece-backed tokenizer: transformers' own switch for the same rule
        def encode(texts):
            return tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        special = frozenset(named) | {i for i, a in tok.added_tokens_decoder.items() if a.special and i != tok.unk_token_id}
    sp = getattr(tok, "sp_model", None)  # transformers 5's SentencePieceBackend.decode leaves byte pieces as "<0xEB>"
    decode = sp.decode if sp is not None and sp.get_piece_size() == len(tok) else tok.decode

    return TextTokenizer(
        str(p), "hf", len(tok), tok.eos_token_id, tok.bos_token_id, fingerprint_files(files), frozenset(special), encode,
        lambda ids: decode(ids),
    )


def _is_sentencepiece(p: Path) -> bool:
    return p.is_file() and p.read_bytes()[:1] == b"\n"  # ModelProto: field 1 (pieces), wire type 2


def _spm_dir_model(p: Path) -> Path | None:
    """The SentencePiece tokenizer.model an HF directory is encoded with, or None (use AutoTokenizer).

    transformers 5 converts a tokenizer.model (class LlamaTokenizer & co.) with converters that
    mishandle leading and repeated spaces (" leading" -> [8236], SentencePiece [29871, 8236]), so
    a directory holding one encodes with it, as the `.model` file does. Not when kopretrain wrote
    the directory (kopretrain_tokenizer.json, or tokenizer_config.json naming TokenizersBackend:
    its tokenizer.json is the faithful conversion, see hf_save), nor when the directory adds
    tokens the model lacks (added_tokens.json, or added tokens with ids past the model's pieces).
    """
    model = p / "tokenizer.model"
    if not _is_sentencepiece(model) or (p / "kopretrain_tokenizer.json").exists() or (p / "added_tokens.json").exists():
        return None
    config_path = p / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if config.get("tokenizer_class") == "TokenizersBackend":
        return None
    import sentencepiece as spm

    size = spm.SentencePieceProcessor(model_file=str(model)).get_piece_size()
    added = [int(i) for i in (config.get("added_tokens_decoder") or {})]
    if (p / "tokenizer.json").is_file():
        added += [a["id"] for a in json.loads((p / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])]
    return None if any(i >= size for i in added) else model


def _load_spm_dir(p: Path) -> TextTokenizer:
    tok = _load_sentencepiece(p / "tokenizer.model")
    files = [f for f in p.iterdir() if f.is_file() and (f.name.startswith("tokenizer") or f.name.startswith("special_tokens"))]
    tok.path, tok.kind, tok.fingerprint = str(p), "hf", fingerprint_files(files)
    return tok


def check_specials_stay_text(tok: TextTokenizer) -> TextTokenizer:
    """UserError if encoding the special tokens' own strings gives a special id (an unusual
    tokenizer whose plain vocabulary can form them): packing could not tell text from boundaries."""
    strings = [tok.decode([i]) for i in sorted(tok.special_ids)]
    leaked = sorted(set(tok.encode_batch([" ".join(strings)])[0]) & tok.special_ids) if strings else []
    if leaked:
        raise UserError(f"{tok.path}: text {tok.decode(leaked[:1])!r} encodes to special id {leaked[0]}; "
                        "kopretrain keeps special-token strings in documents as text and cannot with this tokenizer")
    return tok


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """Load a SentencePiece model file, a tokenizer.json file or an HF tokenizer directory.

    Its `encode_batch(texts)` is the one document encoder: no BOS/EOS added, special-token
    strings in the text encoded as text (see the module docstring).
    """
    return check_specials_stay_text(_load(path))


def _load(path: str | Path) -> TextTokenizer:
    from kopretrain.paths import resolve_path

    p = resolve_path(path)
    if p.is_dir():
        if _spm_dir_model(p) is not None:
            return _load_spm_dir(p)
        if any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            return _load_hf_dir(p)
        raise UserError(f"no tokenizer files (tokenizer.json, tokenizer_config.json, tokenizer.model) in {p}")
    if not p.is_file():
        raise UserError(f"tokenizer not found: {p}")
    if p.suffix == ".json":
        try:
            json.loads(p.read_text(encoding="utf-8"))["model"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"not a Hugging Face tokenizer.json: {p}") from None
        return _load_tokenizer_json(p)
    if _is_sentencepiece(p):
        return _load_sentencepiece(p)
    from kopretrain.tokenizer.tiktoken_convert import is_tiktoken_file

    if is_tiktoken_file(p):  # Llama-3's tokenizer.model: tiktoken ranks, converted to tokenizer.json form
        return _load_tiktoken(p)
    raise UserError(f"unrecognised tokenizer file (not SentencePiece, not tokenizer.json): {p}")
