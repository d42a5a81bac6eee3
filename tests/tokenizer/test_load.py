"""load_tokenizer: every accepted kind, ids identical to the libraries' own encoders."""

from __future__ import annotations

import pickle

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from kopretrain.errors import UserError
from kopretrain.tokenizer.load import load_tokenizer


@pytest.fixture(scope="module")
def texts(repo_root):
    ko = (repo_root / "data/heldout/ko.txt").read_text(encoding="utf-8").splitlines()[:200]
    en = (repo_root / "data/heldout/en.txt").read_text(encoding="utf-8").splitlines()[:100]
    return ko + en + ["", "  두 칸  공백 ", "emoji 😀 漢字"]


def test_sentencepiece_model_matches_sentencepiece(shared_dir, texts):
    path = shared_dir / "tokenizers/llama2/tokenizer.model"
    tok = load_tokenizer(path)
    assert (tok.kind, tok.vocab_size, tok.eos_id, tok.bos_id) == ("sentencepiece", 32000, 2, 1)
    assert tok.encode_batch(texts) == spm.SentencePieceProcessor(model_file=str(path)).encode(texts)
    assert len(tok.encode_batch(["안녕하세요, 오늘은 날씨가 좋네요"])[0]) == 29


@pytest.mark.parametrize("rel", ["tokenizers/polyglot-ko", "tokenizers/polyglot-ko/tokenizer.json"])
def test_tokenizer_json_and_hf_dir_match_transformers(shared_dir, texts, rel):
    tok = load_tokenizer(shared_dir / rel)
    reference = AutoTokenizer.from_pretrained(shared_dir / "tokenizers/polyglot-ko")
    assert tok.encode_batch(texts) == reference(texts, add_special_tokens=False)["input_ids"]
    assert tok.eos_id == reference.eos_token_id


def test_shipped_smoke_tokenizer_dir_matches_its_sentencepiece_model(repo_root, texts):
    """The shipped dir (saved by transformers, class LlamaTokenizer) encodes with its tokenizer.model,
    not with transformers' conversion of it, which differs on whitespace (issue 8 §1)."""
    import sentencepiece as spm

    d = repo_root / "data/smoke/tokenizer"
    tok = load_tokenizer(d)
    assert tok.encode_batch(texts) == spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model")).encode(texts)


def test_pickles_by_path_for_ray(shared_dir):
    tok = load_tokenizer(shared_dir / "tokenizers/mistral/tokenizer.model.v1")
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode_batch(["한국어 text"]) == tok.encode_batch(["한국어 text"])
    assert again.fingerprint == tok.fingerprint


def test_bad_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "nope.model")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UserError, match="not a Hugging Face tokenizer.json"):
        load_tokenizer(tmp_path / "x.json")
    (tmp_path / "junk.model").write_bytes(b"\x00\x01junk")
    with pytest.raises(UserError, match="unrecognised tokenizer file"):
        load_tokenizer(tmp_path / "junk.model")
    with pytest.raises(UserError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
