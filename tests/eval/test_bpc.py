import math

import pytest
import torch
import torch.nn.functional as F

from kopretrain.config.eval import MIN_MAX_LEN
from kopretrain.eval.bpc import _windows, bits_per_char
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


def test_bpc_matches_a_direct_computation(tiny):
    """bpc encodes through load_tokenizer's encode_batch; on ordinary text its ids are the HF
    tokenizer's, so the figure equals a direct computation with the HF tokenizer."""
    model, tok, hf = tiny
    text = "안녕하세요, 오늘은 날씨가 좋네요. Hello there."
    ids = torch.tensor([[hf.bos_token_id] + hf(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    nats = F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
    r = bits_per_char(model, tok, [text], max_len=64)
    assert r.num_chars == len(text)
    assert r.num_tokens == ids.shape[1] - 1
    assert r.bpc == pytest.approx(nats / math.log(2) / len(text), rel=1e-5)


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
