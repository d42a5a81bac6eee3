"""SentencePiece training: deterministic, lossless on whitespace, and the demo's English base."""

from __future__ import annotations

from kopretrain.config.tokenizer import SpmTrainConfig
from kopretrain.tokenizer.train_spm import build_base_tokenizer, train_sentencepiece
from tests.tokenizer.conftest import CASES


def test_training_is_deterministic_and_bounded(ko_texts):
    cfg = SpmTrainConfig(vocab_size=1200, input_sentence_size=3000)
    a, b = train_sentencepiece(ko_texts[:6000], cfg), train_sentencepiece(ko_texts[:6000], cfg)
    assert a.SerializeToString() == b.SerializeToString()
    assert len(a.pieces) == 1200 and a.trainer_spec.byte_fallback and a.trainer_spec.input_sentence_size == 3000
    assert a.normalizer_spec.name == "identity" and not a.normalizer_spec.remove_extra_whitespaces
    unigram = train_sentencepiece(ko_texts[:3000], SpmTrainConfig(vocab_size=2500, model_type="unigram"))
    assert unigram.trainer_spec.model_type == unigram.trainer_spec.UNIGRAM


def test_english_base_directory_for_the_demo(en_base_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(en_base_dir)
    assert len(tok) == 1000 and tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.unk_token_id == 0
    assert (en_base_dir / "tokenizer.model").is_file()
    for text in CASES.values():
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
