"""Choosing new tokens: the Hangul filters, frequency order, closure under merges, the budget."""

from __future__ import annotations

from collections import Counter

from kopretrain.tokenizer.select import Selector, bytes_touch_hangul, has_hangul, rank_candidates, round_up, select_tokens


def test_has_hangul_covers_syllables_and_jamo_only():
    assert has_hangul("안") and has_hangul("ㅋㅋ") and has_hangul("x한y") and has_hangul("\u1100")
    assert not has_hangul("漢字") and not has_hangul("hello") and not has_hangul("カタカナ") and not has_hangul("😀")


def test_bytes_touch_hangul_only_for_hangul_lead_bytes():
    for ch in "가힣안ㄱㅋㅠᄀᇿ":
        assert bytes_touch_hangul(ch.encode()) and bytes_touch_hangul(b" " + ch.encode())
    assert bytes_touch_hangul("가".encode()[:2]) and bytes_touch_hangul("안".encode()[:1])  # 0xEC: only Hangul
    assert not bytes_touch_hangul("가".encode()[:1])  # 0xEA alone: also Yi (U+A000-)
    assert not bytes_touch_hangul("ꀀ".encode())  # a Yi syllable
    assert not bytes_touch_hangul("ㄱ".encode()[:2])  # 0xE3 0x84: also Bopomofo
    assert not bytes_touch_hangul("中😀é".encode()) and not bytes_touch_hangul(b"abc")
    assert not bytes_touch_hangul("안".encode()[1:])


def test_rank_candidates_by_frequency_then_model_order():
    counts = Counter({"b": 5, "a": 5, "c": 9, "d": 0})
    assert rank_candidates(counts, ["a", "b", "c", "d", "e"]) == ["c", "a", "b"]


def _selector(known, vocab):
    def splits(t):
        return [(t[:i], t[i:]) for i in range(1, len(t)) if (t[:i] in vocab or len(t[:i]) == 1) and (t[i:] in vocab or len(t[i:]) == 1)]

    return Selector(set(known), has_hangul, splits, is_atom=lambda t: len(t) == 1)


def test_closure_adds_missing_parts_first_and_respects_the_budget():
    vocab = {"안녕", "안녕하", "하세요", "세요"}
    sel = _selector({"안", "하"}, vocab)
    added = select_tokens(["안녕하세요"], sel, 100)
    assert added[-1] == "안녕하세요"
    pos = {t: i for i, t in enumerate(added)}
    for token in added:  # every token comes after a split of it into known tokens
        if len(token) > 1:
            left, right = sel.merge_of[token]
            assert left + right == token
            assert all(part in {"안", "하"} or pos[part] < pos[token] for part in (left, right))
    assert select_tokens(["안녕하세요"], _selector({"안", "하"}, vocab), 2) == []  # needs more than 2


def test_parts_without_hangul_make_a_candidate_infeasible():
    sel = _selector({"▁"}, {"다…"})
    assert select_tokens(["다…", "다"], sel, 10) == ["다"]  # '…' would change English text


def test_round_up():
    assert round_up(32000, 64) == 32000 and round_up(32001, 64) == 32064 and round_up(7, 1) == 7
