"""clean_records: accounting (every record lands once), counters, order, determinism, on real
shipped text and on records the reader rejected."""

from __future__ import annotations

from kopretrain.config.data_stages import CleanConfig, FilterConfig, PiiConfig, SourceConfig
from kopretrain.data.clean import clean_records
from kopretrain.data.read import list_files, plan_reads, read_task


def _rec(i, text, domain="ko", reason=None, raw=None):
    return {"id": f"s/f@{i}", "source": "s", "domain": domain, "text": text, "reason": reason, "raw": raw}


def _read(source: SourceConfig) -> list[dict]:
    return [r for t in plan_reads(source, list_files(source), 1 << 30) for r in read_task(t, source)]


def test_accounting_and_counters_on_mixed_batch():
    records = [
        _rec(0, "오늘 날씨가 정말 좋네요. 산책하러 나가야겠어요."),
        _rec(1, None, reason="malformed_json", raw='{"text": '),
        _rec(2, "ㅋㅋ"),
        _rec(3, "연락은 010-1234-5678 또는 kim.minsu@naver.com 으로 주세요. 감사합니다."),
        _rec(4, "   "),
        _rec(5, "This sentence is entirely English and has no Hangul at all."),
        _rec(6, "This sentence is entirely English and has no Hangul at all.", domain="en"),
        _rec(7, "bin\x00\x01\x02\x03ary"),
    ]
    kept, rejected, counters = clean_records(records, CleanConfig())
    assert len(kept) + len(rejected) == len(records)
    assert [r["id"] for r in kept] == ["s/f@0", "s/f@3", "s/f@6"]
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {"s/f@1": "malformed_json", "s/f@2": "too_few_chars", "s/f@4": "empty_text",
                       "s/f@5": "hangul_ratio", "s/f@7": "control_chars"}
    assert sum(v for k, v in counters.items() if k.startswith("dropped_")) == len(rejected)
    assert counters["dropped_hangul_ratio"] == 1
    assert counters["pii_tel"] == 1 and counters["pii_email"] == 1 and counters["docs_with_pii"] == 1
    assert kept[1]["text"] == "연락은 <|tel|> 또는 <|email|> 으로 주세요. 감사합니다."
    assert set(kept[0]) == {"id", "text", "domain", "source"}
    assert set(rejected[0]) == {"id", "source", "reason", "text"}
    assert rejected[0]["text"] == '{"text": '  # the reader's raw line is kept for inspection


def test_pii_can_be_switched_off_and_filters_configured():
    records = [_rec(0, "궁금한 점이 있으시면 언제든지 전화 010-1234-5678 로 연락 주세요. 친절하게 안내해 드리겠습니다.")]
    kept, _, counters = clean_records(records, CleanConfig(pii=PiiConfig(enabled=False)))
    assert "010-1234-5678" in kept[0]["text"] and not any(k.startswith("pii_") for k in counters)
    kept, rejected, _ = clean_records(records, CleanConfig(filter=FilterConfig(min_chars=100)))
    assert not kept and rejected[0]["reason"] == "too_few_chars"


def test_real_news_comments_account_and_are_deterministic(repo_root):
    source = SourceConfig(name="news", path=str(repo_root / "data/ko/news_comments.txt"), domain="ko")
    records = _read(source)[:3000]
    kept, rejected, counters = clean_records(records, CleanConfig())
    assert len(kept) + len(rejected) == len(records) == 3000
    assert sum(v for k, v in counters.items() if k.startswith("dropped_")) == len(rejected)
    assert 0.6 < len(kept) / len(records) < 0.98  # noisy comments: most pass, some junk fails
    again = clean_records(records, CleanConfig())
    assert again == (kept, rejected, counters)
    # Batching does not change the result: two halves give the same rows and summed counters.
    k1, r1, c1 = clean_records(records[:1500], CleanConfig())
    k2, r2, c2 = clean_records(records[1500:], CleanConfig())
    assert k1 + k2 == kept and r1 + r2 == rejected
    assert {k: c1.get(k, 0) + c2.get(k, 0) for k in counters} == counters
