"""The guarantees of issue 4 on real SentencePiece bases (Llama-2, Mistral, sentencepiece's own
Unigram test model): base ids kept, non-Korean text unchanged, lossless round trips, Korean
at least 2x cheaper, SentencePiece and the Hugging Face directory agree."""

from __future__ import annotations

from collections import Counter

import pytest
import sentencepiece as spm

from kopretrain.config.tokenizer import SpmTrainConfig, TokenizerCommandConfig
from kopretrain.tokenizer.efficiency import EXAMPLE_SENTENCE
from kopretrain.tokenizer.expand import expand, resolve_base
from kopretrain.tokenizer.merge_sentencepiece import merge_pieces, piece_counts, read_model
from kopretrain.tokenizer.select import PLACEHOLDER, has_hangul
from kopretrain.tokenizer.train_spm import train_sentencepiece
from tests.tokenizer.conftest import CASES, NON_KOREAN


def test_every_base_piece_keeps_its_id_score_and_type(llama2_expanded):
    base_path, out, info = llama2_expanded
    base, merged = read_model(base_path), read_model(out / "tokenizer.model")
    assert info["base_vocab_size"] == 32000 and info["vocab_size"] == 46336 == len(merged.pieces)
    for a, b in zip(base.pieces, merged.pieces):
        assert (a.piece, a.score, a.type) == (b.piece, b.score, b.type)
    new = merged.pieces[32000:]
    assert [p.piece for p in new] == info["added_tokens"]
    assert all(has_hangul(p.piece) for p in new)
    assert len({p.piece for p in merged.pieces}) == len(merged.pieces), "no duplicate pieces"
    # New pieces rank below every regular base piece, in a strict order.
    regular = min(p.score for p in base.pieces if p.type == p.NORMAL and p.score > -(2**24))
    scores = [p.score for p in new]
    assert scores[0] < regular and all(a > b for a, b in zip(scores, scores[1:]))


def test_text_without_korean_keeps_the_base_ids(llama2_expanded, heldout):
    base_path, out, _ = llama2_expanded
    base, new = spm.SentencePieceProcessor(model_file=str(base_path)), spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    texts = heldout["en"] + [CASES[k] for k in NON_KOREAN]
    assert new.encode(texts) == base.encode(texts)


@pytest.fixture(scope="module")
def expanded_hf(llama2_expanded):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama2_expanded[1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_encode_round_trip(llama2_expanded, expanded_hf, name):
    _, out, _ = llama2_expanded
    text = CASES[name]
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert sp.decode(sp.encode(text)) == text
    tok = expanded_hf
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1:] == sp.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_korean_needs_at_least_half_the_tokens(llama2_expanded, heldout):
    base_path, out, _ = llama2_expanded
    base, new = spm.SentencePieceProcessor(model_file=str(base_path)), spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    n_base = sum(map(len, base.encode(heldout["ko"])))
    n_new = sum(map(len, new.encode(heldout["ko"])))
    assert n_base / n_new >= 2.0, (n_base, n_new)
    assert len(base.encode(EXAMPLE_SENTENCE)) == 29
    assert len(new.encode(EXAMPLE_SENTENCE)) <= 10


def test_fast_slow_and_sentencepiece_agree(llama2_expanded, expanded_hf, heldout):
    """transformers 5: AutoTokenizer always gives the tokenizers-backed class (use_fast=False is
    ignored); the sentencepiece-backed 'slow' class is SentencePieceBackend."""
    from transformers import AutoTokenizer
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    _, out, _ = llama2_expanded
    fast = expanded_hf
    assert isinstance(fast, TokenizersBackend)
    assert isinstance(AutoTokenizer.from_pretrained(out, use_fast=False), TokenizersBackend)
    slow = SentencePieceBackend.from_pretrained(out)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    texts = heldout["ko"][:500] + heldout["en"][:200] + list(CASES.values())
    fast_ids = fast(texts, add_special_tokens=False)["input_ids"]
    assert fast_ids == sp.encode(texts)
    assert [slow(t, add_special_tokens=False)["input_ids"] for t in texts] == fast_ids
    assert len(fast) == len(slow) == 46336


def test_vocabulary_padded_with_placeholders_when_candidates_run_out(shared_dir, ko_texts):
    base = read_model(shared_dir / "tokenizers/llama2/tokenizer.model")
    korean = train_sentencepiece(ko_texts[:300], SpmTrainConfig(vocab_size=1000, character_coverage=0.98))
    result = merge_pieces(base, korean, piece_counts(korean, ko_texts[:300]), num_new_tokens=5000, pad_to_multiple_of=64)
    assert len(result.proto.pieces) % 64 == 0 and result.num_placeholders > 0
    assert len(result.added) == result.num_candidates or len(result.added) < 5000
    tail = result.proto.pieces[32000 + len(result.added):]
    assert [p.piece for p in tail] == [PLACEHOLDER.format(i) for i in range(result.num_placeholders)]
    sp = spm.SentencePieceProcessor(model_proto=result.proto.SerializeToString())
    produced = {i for ids in sp.encode(ko_texts[:2000] + [PLACEHOLDER.format(0)]) for i in ids}
    assert not produced & set(range(len(result.proto.pieces) - result.num_placeholders, len(result.proto.pieces)))


def test_num_new_tokens_rounds_up_to_the_multiple_with_real_pieces(shared_dir, ko_texts):
    base = read_model(shared_dir / "tokenizers/llama2/tokenizer.model")
    korean = train_sentencepiece(ko_texts[:5000], SpmTrainConfig(vocab_size=3000))
    counts = piece_counts(korean, ko_texts[:5000])
    result = merge_pieces(base, korean, counts, num_new_tokens=1000, pad_to_multiple_of=128)
    assert len(result.added) == 1024 and result.num_placeholders == 0
    unpadded = merge_pieces(base, korean, counts, num_new_tokens=1000, pad_to_multiple_of=1)
    assert len(unpadded.added) == 1000 and unpadded.added == result.added[:1000]
    # Every multi-character new piece can be built from two pieces that are in the vocabulary.
    vocab = {p.piece for p in result.proto.pieces}
    for piece in result.added:
        assert all(ch in vocab for ch in piece)
        assert len(piece) == 1 or any(piece[:i] in vocab and piece[i:] in vocab for i in range(1, len(piece)))


def test_without_the_hangul_filter_other_pieces_are_added_too(en_base_dir, ko_texts):
    base = read_model(en_base_dir / "tokenizer.model")
    korean = train_sentencepiece(ko_texts[:5000], SpmTrainConfig(vocab_size=3000))
    counts = piece_counts(korean, ko_texts[:5000])
    loose = merge_pieces(base, korean, counts, num_new_tokens=2000, require_hangul=False)
    strict = merge_pieces(base, korean, counts, num_new_tokens=2000)
    assert any(not has_hangul(p) for p in loose.added) and all(has_hangul(p) for p in strict.added)


def test_extra_model_pieces_are_merged_instead_of_training(shared_dir, ko_texts, tmp_path):
    korean = train_sentencepiece(ko_texts[:3000], SpmTrainConfig(vocab_size=1500, seed=7))
    (tmp_path / "ko.model").write_bytes(korean.SerializeToString())
    base = shared_dir / "tokenizers/llama2/tokenizer.model"
    cfg = TokenizerCommandConfig(base=str(base), extra_model=str(tmp_path / "ko.model"), num_new_tokens=500)
    info = expand(resolve_base(base), ko_texts[:3000], cfg, tmp_path / "out")
    korean_pieces = {p.piece for p in korean.pieces}
    assert info["korean_model"] == str(tmp_path / "ko.model")
    assert info["num_added"] == 512 and set(info["added_tokens"]) <= korean_pieces | {ch for p in korean_pieces for ch in p}
    counts = Counter(piece_counts(korean, ko_texts[:3000]))
    base_pieces = {q.piece for q in read_model(base).pieces}
    top = [p for p, _ in counts.most_common() if has_hangul(p) and p not in base_pieces][:50]
    assert set(top) <= set(info["added_tokens"]), "the most frequent Korean pieces come first"


def test_mistral_base(shared_dir, ko_texts, tmp_path):
    base = shared_dir / "tokenizers/mistral/tokenizer.model.v1"
    cfg = TokenizerCommandConfig(base=str(base), num_new_tokens=2000, spm=SpmTrainConfig(vocab_size=4000))
    info = expand(resolve_base(base), ko_texts[:10000], cfg, tmp_path)
    assert info["vocab_size"] == 34048
    old, new = spm.SentencePieceProcessor(model_file=str(base)), spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert [new.id_to_piece(i) for i in range(32000)] == [old.id_to_piece(i) for i in range(32000)]
    for name, text in CASES.items():
        assert new.decode(new.encode(text)) == text
        if name in NON_KOREAN:
            assert new.encode(text) == old.encode(text)


def test_unigram_base_without_byte_fallback(shared_dir, ko_texts, tmp_path):
    """sentencepiece's test model: Unigram, nfkc, no byte fallback. Korean was <unk>; now it is not."""
    from transformers import AutoTokenizer

    base = shared_dir / "tokenizers/sentencepiece-test/test_model.model"
    cfg = TokenizerCommandConfig(base=str(base), num_new_tokens=3000, spm=SpmTrainConfig(vocab_size=4000, model_type="unigram"))
    expand(resolve_base(base), ko_texts[:10000], cfg, tmp_path)
    old, new = spm.SentencePieceProcessor(model_file=str(base)), spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    korean = CASES["korean"]
    assert old.unk_id() in old.encode(korean) and old.unk_id() not in new.encode(korean)
    assert new.encode(CASES["english"]) == old.encode(CASES["english"])
    tok = AutoTokenizer.from_pretrained(tmp_path)
    for text in (korean, CASES["english"], CASES["mixed"]):
        assert tok(text, add_special_tokens=False)["input_ids"] == new.encode(text)


def test_base_directory_settings_are_carried_over(en_base_dir, ko_texts, tmp_path):
    import json
    import shutil

    from transformers import AutoTokenizer

    base_dir = tmp_path / "base"
    shutil.copytree(en_base_dir, base_dir)
    config = json.loads((base_dir / "tokenizer_config.json").read_text())
    config.update(add_eos_token=True, chat_template="{{ messages }}", model_max_length=4096)
    (base_dir / "tokenizer_config.json").write_text(json.dumps(config))
    cfg = TokenizerCommandConfig(base=str(base_dir), num_new_tokens=100, spm=SpmTrainConfig(vocab_size=3000))
    expand(resolve_base(base_dir), ko_texts[:3000], cfg, tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = tok(CASES["korean"])["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.chat_template == "{{ messages }}" and tok.model_max_length == 4096
