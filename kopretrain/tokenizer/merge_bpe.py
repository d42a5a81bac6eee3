"""Merge Korean tokens into a Hugging Face BPE base given as tokenizer.json (Polyglot-Ko,
Llama-3 converted, Qwen: byte-level BPE; also SentencePiece-style BPE exported to JSON).

1. Train a Korean BPE with the base's own normalizer and pre-tokenizer (so its tokens are
   spelled in the base's alphabet: byte-level "Ġì..." or "▁..."), on the Korean sample.
2. Count its tokens on that sample and choose new ones by frequency (`select`): a token must
   touch Hangul (for byte-level tokens: contain the start of a Hangul character's UTF-8
   bytes) and be buildable by one merge of two vocabulary tokens.
3. Append them to `model.vocab` after the largest id in use (added tokens included) and
   append their merges after all base merges, so on any text the base's merges apply first.

    new_json, added = merge_bpe_json(base_json, texts, train_vocab_size=16000, num_new_tokens=8960)

Pure `tokenizers`; tested in tests/tokenizer/test_merge_bpe.py.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from kopretrain.errors import UserError
from kopretrain.tokenizer.select import PLACEHOLDER, Selector, bytes_touch_hangul, has_hangul, rank_candidates, round_up, select_tokens



@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """The GPT-2 byte-level alphabet: printable character -> the byte it stands for."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    assert set(table) == set(alphabet)
    return table


def is_byte_level(tokenizer_json: dict) -> bool:
    def walk(node) -> bool:
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(tokenizer_json.get("pre_tokenizer")) or walk(tokenizer_json.get("decoder"))


def token_touches_hangul(token: str, byte_level: bool) -> bool:
    if not byte_level:
        return has_hangul(token)
    table = byte_decoder()
    if any(ch not in table for ch in token):
        return False
    return bytes_touch_hangul(bytes(table[ch] for ch in token))


def train_korean_bpe(base_json: dict, texts: list[str], vocab_size: int) -> Tokenizer:
    """A BPE trained on `texts` with the base's normalizer and pre-tokenizer."""
    base = Tokenizer.from_str(json.dumps(base_json))
    korean = Tokenizer(models.BPE())
    korean.normalizer = base.normalizer
    korean.pre_tokenizer = base.pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if is_byte_level(base_json) else []
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False, min_frequency=2)
    korean.train_from_iterator(texts, trainer)
    return korean


def _merges_of(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


@dataclass
class BpeMergeResult:
    tokenizer_json: dict
    """The merged tokenizer.json (base entries unchanged)."""
    added: list[str]
    """New tokens in id order."""
    first_new_id: int
    num_placeholders: int
    num_candidates: int


def merge_bpe_json(
    base_json: dict,
    texts: list[str],
    *,
    train_vocab_size: int,
    num_new_tokens: int,
    pad_to_multiple_of: int = 1,
    require_hangul: bool = True,
) -> BpeMergeResult:
    model = base_json.get("model", {})
    if model.get("type") != "BPE":
        raise UserError(f"tokenizer.json base must be a BPE model, got {model.get('type')!r}")
    byte_level = is_byte_level(base_json)
    vocab: dict[str, int] = dict(model["vocab"])
    used_ids = set(vocab.values()) | {t["id"] for t in base_json.get("added_tokens", [])}
    first_new_id = max(used_ids) + 1
    known = set(vocab) | {t["content"] for t in base_json.get("added_tokens", [])}

    korean = train_korean_bpe(base_json, texts, train_vocab_size)
    counts: Counter = Counter()
    for i in range(0, len(texts), 4096):
        for enc in korean.encode_batch(texts[i : i + 4096], add_special_tokens=False):
            counts.update(enc.tokens)
    korean_merges = {a + b: (a, b) for a, b in _merges_of(korean)}
    korean_vocab = korean.get_vocab()
    ranked = [t for t in rank_candidates(counts, sorted(korean_vocab, key=korean_vocab.get)) if t not in known]
    if require_hangul:
        ranked = [t for t in ranked if token_touches_hangul(t, byte_level)]

    def splits(token: str) -> list[tuple[str, str]]:
        trained = [korean_merges[token]] if token in korean_merges else []
        usable = known | set(korean_vocab)
        others = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in usable and token[i:] in usable]
        return trained + [s for s in others if s not in trained]

    accept = (lambda t: token_touches_hangul(t, byte_level)) if require_hangul else (lambda t: True)
    selector = Selector(known, accept, splits, is_atom=lambda t: len(t) == 1)
    base_size = first_new_id
    target = round_up(base_size + num_new_tokens, pad_to_multiple_of) - base_size
    added = select_tokens(ranked, selector, target) if num_new_tokens > 0 else []
    num_placeholders = round_up(base_size + len(added), pad_to_multiple_of) - base_size - len(added)

    merged = copy.deepcopy(base_json)
    new_vocab = merged["model"]["vocab"]
    # tokenizers numbers an added token missing from the model vocab after len(vocab), so the
    # base's added tokens above the BPE vocab (Polyglot-Ko's <|acc|> at 30000) join the vocab at
    # their ids, or growing the vocab would move them. No merge builds them: BPE never emits them.
    for added_token in merged.get("added_tokens", []):
        new_vocab.setdefault(added_token["content"], added_token["id"])
    names = added + [PLACEHOLDER.format(i) for i in range(num_placeholders)]
    for offset, token in enumerate(names):
        assert token not in new_vocab
        new_vocab[token] = first_new_id + offset
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merged["model"]["merges"]]
    final = set(new_vocab)
    for token in added:  # the planned merge first, then every other split of two vocabulary tokens
        if len(token) < 2:
            continue
        chosen = selector.merge_of[token]
        others = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in final and token[i:] in final]
        merges += [chosen] + [s for s in others if s != chosen]
    merged["model"]["merges"] = [list(m) for m in merges]
    return BpeMergeResult(merged, added, first_new_id, num_placeholders, len(ranked))
