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


def test_read_then_clean_a_corpus_with_every_bad_kind(tmp_path):
    import gzip
    import json

    good = ["오늘은 날씨가 정말 좋아서 산책을 했어요.", "이 영화는 배우들의 연기가 훌륭했습니다.", "연락은 010-2222-3333 으로 주세요, 부탁드립니다."]
    lines = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in good]
    lines += [b'{"text": "\xff bad"}', b"{broken", b'{"text": null}', b'{"text": "ok"}', b'{"text": "' + b"x" * 5000 + b'"}']
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b"\n".join(lines) + b"\n")[:-12])  # truncated
    (tmp_path / "c.txt").write_text("\n".join(good + ["ㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋ", "English only line in Korean data"]) + "\n", encoding="utf-8")
    source = SourceConfig(name="mix", path=str(tmp_path), domain="ko", max_record_bytes=4096)
    outputs = []
    for chunk in (1 << 30, 64):  # split reads give the same cleaned output
        records = [r for t in plan_reads(source, list_files(source), chunk) for r in read_task(t, source)]
        outputs.append(clean_records(records, CleanConfig()))
    kept, rejected, counters = outputs[0]
    assert outputs[0] == outputs[1]
    assert len(kept) + len(rejected) == len(records)
    reasons = sorted({r["reason"] for r in rejected})
    assert reasons == ["char_repetition", "hangul_ratio", "invalid_utf8", "malformed_json", "null_text",
                       "too_few_chars", "too_long", "truncated_stream"]
    assert counters["pii_tel"] == 3 and sum(v for k, v in counters.items() if k.startswith("dropped_")) == len(rejected)
    assert len({r["id"] for r in kept + rejected}) == len(records)  # ids unique across files


def test_rejected_text_is_bounded():
    huge = "가나다라 " * 40_000  # 200k characters, dropped by max_chars
    _, rejected, _ = clean_records([_rec(0, huge)], CleanConfig(filter=FilterConfig(max_chars=100_000)))
    assert rejected[0]["reason"] == "too_many_chars"
    assert len(rejected[0]["text"]) < 70_000 and rejected[0]["text"].endswith("[truncated: 199999 characters]")
