"""Issue 8 §3: the saved tokenizer.json encodes and decodes exactly like the saved tokenizer.model,
also for bases with user-defined symbols (`<mask>`, `<start_of_turn>`), with and without the
dummy prefix, with extra-whitespace removal and NFKC; and AutoTokenizer loads the directory with
the same ids. Bases are tiny SentencePiece models trained here on English text."""

from __future__ import annotations

import random
import warnings

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer

from kopretrain.tokenizer.hf_save import save_spm_dir
from tests.tokenizer.spm_models import english_lines, train_model

SYMBOLS = ("<mask>", "<start_of_turn>", "<end_of_turn>")
CASES = [
    "hello<mask>world", "<start_of_turn>user\n안녕", " <mask> x", "  two leading spaces", "two trailing  ", " ",
    "<mask>", "<mask><mask>", "a <mask>", "x<start_of_turn> y ", "<mask>\n", "\t<mask>\t", "The end.",
    "<start_of_turn>user\nHi there!<end_of_turn>\n<start_of_turn>model\n", "  <start_of_turn>  spaced  <mask>  ",
]
FRAGMENTS = ["hello", "<mask>", "<start_of_turn>", "<end_of_turn>", " ", "  ", "world", "\n", "안녕", "x", "<", ">",
             "the", "ㅋ", "Ａ", "\t", "<ma", "sk>", "start_of", "."]
LITERAL_NAMES = ["<0x0A>", "</s>", "<s>", "<unk>", "<0x41>"]
"""Names of pieces no text produces: SentencePiece spells them out as text."""

BASES = {  # name: (model_type, add_dummy_prefix, remove_extra_whitespaces, normalization rule)
    "llama_style": ("bpe", True, False, "identity"),
    "gemma_style": ("bpe", False, False, "identity"),
    "bpe_nfkc_collapsing": ("bpe", True, True, "nmt_nfkc"),
    "bpe_collapsing_no_prefix": ("bpe", False, True, "identity"),
    "unigram_dummy_prefix": ("unigram", True, False, "identity"),
    "unigram_no_prefix": ("unigram", False, False, "identity"),
}


def _texts(seed: int, fragments: list[str], n: int = 400) -> list[str]:
    rng = random.Random(seed)
    return CASES + ["".join(rng.choice(fragments) for _ in range(rng.randint(1, 7))) for _ in range(n)]


@pytest.fixture(scope="module", params=sorted(BASES))
def saved(request, shared_dir, tmp_path_factory):
    model_type, prefix, collapse, rule = BASES[request.param]
    proto = train_model(english_lines(shared_dir, "botchan/botchan.txt", 3000), vocab_size=1000, model_type=model_type,
                        rule=rule, add_dummy_prefix=prefix, remove_extra_whitespaces=collapse, user_defined_symbols=SYMBOLS)
    out = tmp_path_factory.mktemp(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every piece is rebuilt by its own merges: no warning
        save_spm_dir(proto, out)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    return request.param, out, sp, Tokenizer.from_file(str(out / "tokenizer.json"))


def test_same_ids_and_decoding_as_sentencepiece(saved):
    name, _, sp, tok = saved
    texts = _texts(0, FRAGMENTS)
    assert [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)] == sp.encode(texts)
    lossless = BASES[name][2:] == (False, "identity")
    for text in texts:
        ids = sp.encode(text)
        assert tok.decode(ids) == sp.decode(ids), text
        if lossless:
            assert tok.decode(ids) == text
    symbol = sp.piece_to_id("<mask>")
    assert sp.is_control(symbol) is False and tok.encode("a<mask>b", add_special_tokens=False).ids.count(symbol) == 1


def test_leading_symbol_and_text_after_a_symbol(saved):
    """The two cases of the issue: SentencePiece gives a leading symbol the dummy prefix as a '▁'
    of its own, and no '▁' to the text right after a symbol."""
    name, _, sp, tok = saved
    for text in ("<start_of_turn>user\n안녕", "hello<mask>world"):
        pieces = sp.encode(text, out_type=str)
        assert tok.encode(text, add_special_tokens=False).tokens == pieces
        if BASES[name][1]:
            assert pieces[0] == "▁" or pieces[0].startswith("▁h")
        assert tok.decode(sp.encode(text)) == (text if BASES[name][2:] == (False, "identity") else sp.decode(sp.encode(text)))


def test_piece_names_written_in_text_stay_text(saved):
    """With special tokens encoded as text (what `load_tokenizer` does), '</s>' or '<0x0A>' right
    after a symbol is spelled out as SentencePiece spells it, never its piece's id (BPE bases;
    a Unigram base's tokenizer.json still takes such names whole, see the README)."""
    name, _, sp, tok = saved
    if BASES[name][0] != "bpe":
        pytest.skip("Unigram: piece names in text are taken whole by tokenizers' Unigram")
    tok.encode_special_tokens = True
    texts = _texts(1, FRAGMENTS + LITERAL_NAMES) + [f"<mask>{n}" for n in LITERAL_NAMES] + LITERAL_NAMES
    assert [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)] == sp.encode(texts)


def test_auto_tokenizer_loads_the_same_ids(saved):
    from transformers import AutoTokenizer

    name, out, sp, _ = saved
    hf = AutoTokenizer.from_pretrained(out)
    texts = _texts(2, FRAGMENTS, n=100)
    assert hf(texts, add_special_tokens=False)["input_ids"] == sp.encode(texts)
    assert hf(CASES[0])["input_ids"] == [sp.bos_id()] + sp.encode(CASES[0])
    assert hf.convert_tokens_to_ids("<start_of_turn>") == sp.piece_to_id("<start_of_turn>")
    if BASES[name][2:] == (False, "identity"):
        assert [hf.decode(sp.encode(t)) for t in CASES] == CASES


def test_expanded_base_keeps_the_agreement(saved, ko_texts, tmp_path):
    """The same base expanded with Korean pieces (as `kopretrain tokenizer` does) still agrees."""
    from transformers import AutoTokenizer

    from kopretrain.config.tokenizer import SpmTrainConfig, TokenizerCommandConfig
    from kopretrain.tokenizer.expand import expand, resolve_base

    name, base_dir, base_sp, _ = saved
    cfg = TokenizerCommandConfig(base=str(base_dir), num_new_tokens=300,
                                 spm=SpmTrainConfig(vocab_size=2000, model_type=BASES[name][0]))
    info = expand(resolve_base(base_dir), ko_texts[:3000], cfg, tmp_path)
    assert info["num_added"] >= 300
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    tok, hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json")), AutoTokenizer.from_pretrained(tmp_path)
    texts = _texts(3, FRAGMENTS + ["카카오톡", "안녕하세요", "오늘 날씨"], n=200) + ko_texts[3000:3200]
    assert [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)] == sp.encode(texts)
    assert hf(texts, add_special_tokens=False)["input_ids"] == sp.encode(texts)
    assert len(sp.encode("안녕하세요 <mask> 반가워요")) < len(base_sp.encode("안녕하세요 <mask> 반가워요"))
    if BASES[name][2:] == (False, "identity"):
        assert [tok.decode(sp.encode(t)) for t in texts] == texts
