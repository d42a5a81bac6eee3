"""Quality filters: each filter keeps good text and drops its junk with its reason, per-domain
settings, the bad-word list, config validation, and drop rates on the shipped real text."""

from __future__ import annotations

import pytest

from kopretrain.config.data_stages import CleanConfig, FilterConfig, SourceConfig
from kopretrain.data.clean import clean_records
from kopretrain.data.filters import QualityFilter, _dup_ngram_chars
from kopretrain.data.read import list_files, plan_reads, read_task
from kopretrain.errors import ConfigError, UserError

GOOD_KO = "오늘은 날씨가 정말 좋아서 친구들과 한강 공원에 가서 자전거를 탔습니다. 저녁에는 치킨을 먹었어요."
GOOD_EN = "The quick brown fox jumps over the lazy dog, and then it runs back into the forest to rest."
QF = QualityFilter(FilterConfig())


@pytest.mark.parametrize("text,domain", [(GOOD_KO, "ko"), (GOOD_EN, "en"), ("이 영화 최고예요 ㅋㅋ", "ko"),
                                         ("가격은 15,000원이고 2024년 1월 15일에 출시됩니다.", "ko")])
def test_good_text_is_kept(text, domain):
    assert QF.check(text, domain) is None


@pytest.mark.parametrize("text,domain,reason", [
    ("꼴좋다", "ko", "too_few_chars"),
    ("This sentence is English text in the Korean domain.", "ko", "hangul_ratio"),
    ("!!!!????~~~~ ^^;;; ...... 헐", "ko", "symbol_ratio"),
    ("2019.05.01. 16:13 123 4567 890 답글", "ko", "digit_ratio"),
    ("대박 ㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋ", "ko", "char_repetition"),
    ("광고 문의 환영합니다\n광고 문의 환영합니다\n광고 문의 환영합니다\n좋은 하루", "ko", "dup_lines"),
    ("김채원! " * 15, "ko", "top_ngram"),
    ("우리 동네 빵집의 소금빵은 정말 맛있어서 매일 아침 사러 간다 " * 2 + "그래서 요즘 살이 조금 쪘다", "ko", "dup_ngram"),
])
def test_junk_is_dropped_with_its_reason(text, domain, reason):
    assert QF.check(text, domain) == reason


def test_dup_line_chars_reason():
    long_line = "이 문장은 아주 길게 반복되는 광고 문구로 여러 번 나타납니다 계속 반복됩니다"
    text = "\n".join([long_line, long_line] + [f"서로 다른 짧은 줄 {i}번" for i in range(6)])
    assert FilterConfig().max_dup_line_ratio >= 1 / 8  # one repeated line of eight: not too many lines...
    assert QF.check(text, "ko") == "dup_line_chars"  # ...but it holds too many of the characters


def test_length_limits_and_words():
    qf = QualityFilter(FilterConfig(min_chars=0, max_chars=10, min_words=3, max_words=5))
    assert qf.check("한 두", "ko") == "too_few_words"
    assert qf.check("하나 둘 셋 넷 다섯 여섯", "ko") == "too_many_chars"
    assert QualityFilter(FilterConfig(max_words=5)).check("하나 둘 셋 넷 다섯 여섯 일곱", "ko") == "too_many_words"


def test_hangul_ratio_only_for_its_domains_and_overrides():
    english = "This sentence is English text."
    assert QF.check(english, "en") is None
    assert QualityFilter(FilterConfig(hangul_domains=["ko", "en"])).check(english, "en") == "hangul_ratio"
    qf = QualityFilter(FilterConfig(domain_overrides={"en": {"min_chars": 50}}))
    assert qf.check(english, "en") == "too_few_chars" and qf.check(english + " ok", "ko") == "hangul_ratio"
    # A Korean sentence with an address or a URL in it is still Korean (ratio over letters).
    assert QF.check("자세한 내용은 https://example.com/path 에서 확인하세요 감사합니다", "ko") is None


def test_ngram_repetition_is_for_longer_texts_only():
    text = "좋아요 좋아요 좋아요 좋아요 정말"
    assert QF.check(text, "ko") is None  # 5 words: under min_words_for_ngram_filters
    assert QualityFilter(FilterConfig(min_words_for_ngram_filters=3)).check(text, "ko") == "top_ngram"
    # A phrase said twice in a short text is style, not spam (Gopher would count it).
    assert QualityFilter(FilterConfig(min_words_for_ngram_filters=3)).check("좋아요 정말 좋아요 정말 최고", "ko") is None


def test_dup_ngram_chars_counts_repeats_once():
    words = "a b c d e a b c d e a b c d e x".split()
    prefix = [0]
    for w in words:
        prefix.append(prefix[-1] + len(w))
    assert _dup_ngram_chars(words, 5, prefix) == 10  # the 2nd and 3rd "a b c d e"
    assert _dup_ngram_chars(list("abcdefghij"), 5, list(range(11))) == 0
    # Never grows with n: the early exit in ngram_repetition relies on it.
    shares = [_dup_ngram_chars(words, n, prefix) for n in range(5, 11)]
    assert shares == sorted(shares, reverse=True)


def test_bad_words_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("# 욕설 목록\n새끼\nbadword\n\n", encoding="utf-8")
    qf = QualityFilter(FilterConfig(bad_words_path=str(path)))
    assert qf.check("이 새끼는 정말 왜 그러는지 모르겠네요", "ko") == "bad_words"
    assert qf.check("ㅅㅐㄲㅣ 라고 써도 소용없다 정말로", "ko") is None  # raw jamo: clean_records normalizes first
    kept, rejected, counters = clean_records(
        [{"id": "s/x@0", "source": "s", "domain": "ko", "text": "ㅅㅐㄲㅣ 라고 써도 소용없다 정말로", "reason": None, "raw": None}],
        CleanConfig(filter=FilterConfig(bad_words_path=str(path))))
    assert not kept and counters == {"docs_normalized": 1, "dropped_bad_words": 1}
    assert qf.check("This has a BadWord inside it, sadly.", "en") == "bad_words"  # case-insensitive
    lenient = QualityFilter(FilterConfig(bad_words_path=str(path), max_bad_words=1))
    assert lenient.check("이 새끼는 정말 왜 그러는지 모르겠네요", "ko") is None
    assert lenient.check("이 새끼 저 새끼 정말 왜 그러는지 모르겠네요", "ko") == "bad_words"
    with pytest.raises(UserError, match="bad_words_path"):
        QualityFilter(FilterConfig(bad_words_path=str(tmp_path / "missing.txt")))


def test_config_validation():
    with pytest.raises(ConfigError, match="max_symbol_ratio"):
        FilterConfig(max_symbol_ratio=1.5)
    with pytest.raises(ConfigError, match="max_chars"):
        FilterConfig(min_chars=100, max_chars=10)
    with pytest.raises(ConfigError, match="domain_overrides.*hangul_domains"):
        FilterConfig(domain_overrides={"en": {"hangul_domains": 1}})
    with pytest.raises(ConfigError, match="domain_overrides: en.min_chars"):
        FilterConfig(domain_overrides={"en": {"min_chars": -1}})
    with pytest.raises(ConfigError, match="max_dup_ngram_ratios"):
        FilterConfig(max_dup_ngram_ratios={5: 2.0})


def _drop_share(repo_root, **source) -> tuple[float, dict]:
    src = SourceConfig(name="s", domain="ko", **{**source, "path": str(repo_root / source["path"])})
    records = [r for t in plan_reads(src, list_files(src), 1 << 30) for r in read_task(t, src)]
    kept, rejected, counters = clean_records(records, CleanConfig())
    return 1 - len(kept) / len(records), counters


def test_real_text_mostly_passes(repo_root):
    # Shipped real text: noisy comments and reviews lose a few percent (tiny, symbol-only,
    # ㅋㅋㅋ-only, English), clean corpora almost nothing.
    news, counters = _drop_share(repo_root, path="data/ko/news_comments.txt")
    assert 0.01 < news < 0.10 and counters["dropped_too_few_chars"] > counters["dropped_symbol_ratio"] > 0
    reviews, _ = _drop_share(repo_root, path="data/ko/nsmc_reviews.jsonl.gz", text_field="review")
    assert 0.01 < reviews < 0.10
    chat, _ = _drop_share(repo_root, path="data/ko/chatbot.csv", text_field="Q,A")
    assert chat < 0.01
