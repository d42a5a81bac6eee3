"""Llama-3's tiktoken tokenizer.model as a base: the conversion reproduces known Llama-3 ids,
and it expands like any byte-level BPE base."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from kopretrain.config.tokenizer import SampleConfig, SpmTrainConfig, TokenizerCommandConfig
from kopretrain.config.common import TrackingConfig
from kopretrain.tokenizer.load import load_tokenizer
from kopretrain.tokenizer.select import has_hangul
from kopretrain.tokenizer.tiktoken_convert import is_tiktoken_file, tiktoken_to_json
from tests.tokenizer.conftest import CASES, NON_KOREAN


@pytest.fixture(scope="module")
def llama3(shared_dir):
    return shared_dir / "tokenizers/llama3/tokenizer.model"


def test_conversion_matches_llama3(llama3, shared_dir):
    assert is_tiktoken_file(llama3) and not is_tiktoken_file(shared_dir / "tokenizers/llama2/tokenizer.model")
    data = tiktoken_to_json(llama3)
    assert len(data["model"]["vocab"]) == 128000 and len(data["model"]["merges"]) == 280147
    tok = Tokenizer.from_str(json.dumps(data))
    assert tok.get_vocab_size() == 128256
    assert tok.encode("Hello world").ids == [128000, 9906, 1917]
    assert tok.token_to_id("<|end_of_text|>") == 128001 and tok.token_to_id("<|eot_id|>") == 128009
    for text in CASES.values():
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text
    loaded = load_tokenizer(llama3)
    assert loaded.kind == "tiktoken" and loaded.eos_id == 128001 and loaded.encode_batch(["Hello world"]) == [[9906, 1917]]


def test_llama3_base_expands(llama3, tmp_path):
    from kopretrain.tokenizer.command import run_tokenizer

    cfg = TokenizerCommandConfig(base=str(llama3), num_new_tokens=500, sample=SampleConfig(num_sample_docs=5000),
                                 spm=SpmTrainConfig(vocab_size=3000), max_heldout_docs=200,
                                 tracking=TrackingConfig(enabled=False))
    report = run_tokenizer(cfg, tmp_path)
    assert report["base_kind"] == "tiktoken" and report["base_vocab_size"] == 128256 and report["vocab_size"] == 128768
    assert report["identical_without_hangul"]["en"] == {"num_docs": 200, "num_identical": 200}
    assert report["tokens_ratio_base_to_expanded"]["ko"] > 1.05
    assert all(has_hangul(t) or "\ufffd" in t for t in report["first_added_tokens"])
    new = Tokenizer.from_file(str(tmp_path / "tokenizer/tokenizer.json"))
    base = Tokenizer.from_str(json.dumps(tiktoken_to_json(llama3)))
    for name, text in CASES.items():
        ids = new.encode(text, add_special_tokens=False).ids
        assert new.decode(ids) == text
        if name in NON_KOREAN:
            assert ids == base.encode(text, add_special_tokens=False).ids
