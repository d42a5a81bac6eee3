import math
import unicodedata

import pytest
import torch
import torch.nn.functional as F

from kopretrain.config.eval import MIN_MAX_LEN
from kopretrain.eval.bpc import _windows, bits_per_char, document_windows
from kopretrain.tokenizer.load import load_tokenizer
from tests.helpers import make_tiny_llama_dir


@pytest.mark.parametrize("n,max_len,overlap", [(5, 8, 2), (30, 8, 3), (31, 8, 0), (100, 16, 7), (2, 4, 1), (9, 3, 1)])
def test_windows_predict_every_token_exactly_once(n, max_len, overlap):
    ids = list(range(n))
    predicted = []
    for window, num_context in _windows(ids, max_len, overlap):
        assert len(window) <= max_len
        start = ids.index(window[0])
        predicted.extend(ids[start + 1 + num_context : start + len(window)])
    assert predicted == ids[1:]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, repo_root):
    texts = (repo_root / "data/heldout/en.txt").read_text().splitlines()[:200]
    texts += (repo_root / "data/heldout/ko.txt").read_text().splitlines()[:200]
    d = make_tiny_llama_dir(tmp_path_factory.mktemp("tiny"), texts, max_position_embeddings=64)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(d), load_tokenizer(d), AutoTokenizer.from_pretrained(d)


def _direct_nats(model, ids: list[int]) -> float:
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=ids_t).logits
    return F.cross_entropy(logits[0, :-1], ids_t[0, 1:], reduction="sum").item()


def test_bpc_matches_a_direct_computation_after_eos_as_in_training(tiny):
    """bpc encodes through load_tokenizer's encode_batch; on ordinary text its ids are the HF
    tokenizer's. Training packs `doc EOS doc EOS ...` without BOS, so a document is scored after
    one EOS (context) and never after BOS: the figure equals a direct computation on [EOS] + ids,
    and differs from the BOS-conditioned one."""
    model, tok, hf = tiny
    text = "안녕하세요, 오늘은 날씨가 좋네요. Hello there."
    ids = hf(text, add_special_tokens=False)["input_ids"]
    nats = _direct_nats(model, [hf.eos_token_id] + ids)
    r = bits_per_char(model, tok, [text], max_len=64)
    assert r.num_chars == len(text)
    assert r.num_tokens == len(ids)
    assert r.bpc == pytest.approx(nats / math.log(2) / len(text), rel=1e-5)
    assert r.loss_per_token == pytest.approx(nats / len(ids), rel=1e-5)
    assert r.perplexity == pytest.approx(math.exp(nats / len(ids)), rel=1e-5)
    assert hf.bos_token_id != hf.eos_token_id
    bos_bits = _direct_nats(model, [hf.bos_token_id] + ids) / math.log(2)
    assert abs(r.bits - bos_bits) > 1e-3


def test_windows_start_with_eos_and_never_contain_bos(tiny):
    _, tok, hf = tiny
    requests, _, _ = document_windows(tok, ["짧은 문장.", "오늘은 날씨가 좋네요. " * 20], max_len=16)
    firsts = [r for r in requests if r.context == [tok.eos_id]]
    assert len(firsts) == 2  # one per document
    assert all(hf.bos_token_id not in r.context + r.continuation for r in requests)


def test_nfd_text_gives_the_bpc_of_its_nfc_form(tiny):
    model, tok, _ = tiny
    nfc = ["한국어 문장을 평가합니다.", "자모가 분리되어도 같은 글입니다."]
    nfd = [unicodedata.normalize("NFD", t) for t in nfc]
    assert nfd != nfc
    a, b = bits_per_char(model, tok, nfc, max_len=64), bits_per_char(model, tok, nfd, max_len=64)
    assert (a.bits, a.num_chars, a.num_tokens) == (b.bits, b.num_chars, b.num_tokens)


def test_batching_and_padding_do_not_change_the_result(tiny):
    model, tok, _ = tiny
    texts = ["짧은 문장.", "A somewhat longer English sentence, with punctuation!", "한국어와 English가 섞인 text입니다."]
    one_by_one = sum(bits_per_char(model, tok, [t], max_len=64).bits for t in texts)
    batched = bits_per_char(model, tok, texts, max_len=64, batch_size=3)
    assert batched.bits == pytest.approx(one_by_one, rel=1e-5)


def test_long_documents_are_windowed_not_truncated(tiny):
    model, tok, _ = tiny
    text = "오늘은 날씨가 좋네요. " * 40  # far beyond 64 tokens
    r = bits_per_char(model, tok, [text], max_len=64, context_overlap=16)
    assert r.num_tokens > 64
    assert r.num_chars == len(text)
    assert 0 < r.bpc < 50


def test_min_max_len_is_the_shortest_window_with_the_capped_overlap():
    """bits_per_char caps the overlap at max_len // 2; _windows needs overlap < max_len - 1."""
    ids = list(range(20))
    for max_len in (1, 2):
        with pytest.raises(AssertionError):
            _windows(ids, max_len, min(32, max_len // 2))
    assert MIN_MAX_LEN == 3 and len(_windows(ids, 3, 1)) == 18  # one new token per window
