"""Byte-level BPE bases in tokenizer.json form: the real Polyglot-Ko tokenizer, and a tiny
English byte-level BPE built in-process (where the Korean gain is large)."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from kopretrain.config.tokenizer import SpmTrainConfig, TokenizerCommandConfig
from kopretrain.tokenizer.expand import expand, resolve_base
from kopretrain.tokenizer.merge_bpe import byte_decoder, merge_bpe_json, token_touches_hangul
from kopretrain.tokenizer.select import PLACEHOLDER
from tests.helpers import make_tiny_bpe_tokenizer
from tests.tokenizer.conftest import CASES, NON_KOREAN


def _encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


@pytest.fixture(scope="module")
def polyglot(shared_dir, ko_texts, tmp_path_factory):
    base_dir = shared_dir / "tokenizers/polyglot-ko"
    out = tmp_path_factory.mktemp("polyglot-ko")
    cfg = TokenizerCommandConfig(base=str(base_dir), num_new_tokens=1000, spm=SpmTrainConfig(vocab_size=6000))
    info = expand(resolve_base(base_dir), ko_texts[:20000], cfg, out)
    return Tokenizer.from_file(str(base_dir / "tokenizer.json")), out, info


def test_polyglot_ids_merges_and_special_tokens_are_kept(polyglot, shared_dir):
    base, out, info = polyglot
    old = json.loads((shared_dir / "tokenizers/polyglot-ko/tokenizer.json").read_text())
    new = json.loads((out / "tokenizer.json").read_text())
    assert info["base_vocab_size"] == 30003  # 30,000 BPE entries + 3 added tokens at 30000..30002
    assert info["vocab_size"] % 64 == 0 and info["vocab_size"] == 30003 + info["num_added"] + info["num_placeholders"]
    for token, i in old["model"]["vocab"].items():
        assert new["model"]["vocab"][token] == i
    old_merges = [tuple(m.split(" ")) for m in old["model"]["merges"]]
    assert [tuple(m) for m in new["model"]["merges"][: len(old_merges)]] == old_merges
    assert new["added_tokens"] == old["added_tokens"]
    added = sorted(new["model"]["vocab"].items(), key=lambda kv: kv[1])[-(info["num_added"] + info["num_placeholders"]):]
    assert [i for _, i in added] == list(range(30003, info["vocab_size"]))
    assert all(token_touches_hangul(t, True) for t, _ in added[: info["num_added"]])


def test_polyglot_text_without_korean_is_unchanged_and_round_trips(polyglot, heldout):
    base, out, _ = polyglot
    new = Tokenizer.from_file(str(out / "tokenizer.json"))
    plain = heldout["en"] + [CASES[k] for k in NON_KOREAN]
    assert _encode(new, plain) == _encode(base, plain)
    for text in CASES.values():
        assert new.decode(_encode(new, [text])[0]) == text
    n_base, n_new = sum(map(len, _encode(base, heldout["ko"]))), sum(map(len, _encode(new, heldout["ko"])))
    assert n_new < n_base


def test_polyglot_directory_loads_with_its_special_tokens(polyglot):
    from transformers import AutoTokenizer

    _, out, info = polyglot
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == info["vocab_size"]
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>" and tok.unk_token == "<|unk|>"
    ids = tok(CASES["korean"], add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == CASES["korean"]
    assert any(i >= 30003 for i in ids), "the new Korean tokens are used"


def test_english_byte_level_base_gets_korean_tokens(repo_root, ko_texts, heldout):
    en = (repo_root / "data/heldout/en.txt").read_text(encoding="utf-8").splitlines()
    base = make_tiny_bpe_tokenizer(en, vocab_size=600).backend_tokenizer
    base_json = json.loads(base.to_str())
    result = merge_bpe_json(base_json, ko_texts[:20000], train_vocab_size=4000, num_new_tokens=2000, pad_to_multiple_of=8)
    new = Tokenizer.from_str(json.dumps(result.tokenizer_json))
    assert new.get_vocab_size() % 8 == 0 and len(result.added) >= 2000
    assert _encode(new, heldout["en"]) == _encode(base, heldout["en"])
    n_base, n_new = sum(map(len, _encode(base, heldout["ko"]))), sum(map(len, _encode(new, heldout["ko"])))
    assert n_base / n_new >= 2.0
    for text in CASES.values():
        assert new.decode(_encode(new, [text])[0]) == text


def test_placeholders_pad_the_vocabulary_and_are_never_produced(repo_root, ko_texts):
    en = (repo_root / "data/heldout/en.txt").read_text(encoding="utf-8").splitlines()
    base = make_tiny_bpe_tokenizer(en, vocab_size=400).backend_tokenizer
    result = merge_bpe_json(json.loads(base.to_str()), ko_texts[:200], train_vocab_size=500, num_new_tokens=5000,
                            pad_to_multiple_of=1024)
    new = Tokenizer.from_str(json.dumps(result.tokenizer_json))
    assert result.num_placeholders > 0 and new.get_vocab_size() == 1024
    placeholders = {new.token_to_id(PLACEHOLDER.format(i)) for i in range(result.num_placeholders)}
    produced = {i for ids in _encode(new, ko_texts[:500] + [PLACEHOLDER.format(0)]) for i in ids}
    assert None not in placeholders and not placeholders & produced


def test_byte_level_hangul_filter():
    encode = {b: ch for ch, b in byte_decoder().items()}

    def spelled(s: str) -> str:
        return "".join(encode[b] for b in s.encode("utf-8"))

    assert token_touches_hangul(spelled(" 안녕"), True)
    assert token_touches_hangul(spelled("한")[:2], True)  # a Hangul lead byte and its next byte
    assert not token_touches_hangul(spelled("中"), True)
    assert not token_touches_hangul(spelled("😀"), True)
    assert not token_touches_hangul(spelled("한")[1:], True)  # continuation bytes also occur in Chinese
    assert not token_touches_hangul(spelled("hello"), True)
