"""PII scrubber: every type on its common forms, decoys left alone, validation rules (Luhn,
calendar dates, check digits, context), and precision/recall on the labelled set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kopretrain.config.data_stages import PiiConfig
from kopretrain.data.pii import PLACEHOLDERS, luhn_ok, score_labelled, scrub_pii
from kopretrain.errors import ConfigError

LABELLED = Path(__file__).with_name("pii_labelled.jsonl")
CFG = PiiConfig()


def scrub(text: str, **kw) -> str:
    return scrub_pii(text, PiiConfig(**kw))[0]


@pytest.mark.parametrize("number", [
    "010-1234-5678", "010 1234 5678", "01012345678", "010.1234.5678", "+82-10-1234-5678", "+82 10 1234 5678",
    "(02) 123-4567", "02-123-4567", "031-123-4567", "070-1234-5678", "1588-1234", "011-123-4567", "0505-123-4567",
    "+82-(0)10-1111-2222", "010 - 1234 - 5678", "02)345-6789", "+821012345678",
])
def test_phone_forms(number):
    assert scrub(f"연락처는 {number}입니다.") == "연락처는 <|tel|>입니다."


@pytest.mark.parametrize("text,kind", [
    ("메일 kim.minsu@naver.com 으로", "email"),
    ("주민번호 900101-1234567", "rrn"),
    ("주민번호 900101-1******", "rrn"),
    ("주민등록번호 9001011234567", "rrn"),
    ("카드 4111-1111-1111-1111", "card"),
    ("카드 4111 1111 1111 1111", "card"),
    ("카드 3782 822463 10005", "card"),
    ("카드 1234-56**-****-3456", "card"),
    ("국민은행 123456-12-123456", "account"),
    ("계좌: 110-123-456789(신한)", "account"),
    ("접속 IP 211.234.10.5", "ip"),
    ("주소 2001:db8::8a2e:370:7334", "ip"),
    ("여권 M12345678", "passport"),
    ("여권 M123A4567", "passport"),
    ("면허 11-12-345678-90", "license"),
])
def test_each_type(text, kind):
    out, counts = scrub_pii(text, CFG)
    assert counts == {kind: 1} and PLACEHOLDERS[kind] in out


@pytest.mark.parametrize("text", [
    "2024-01-15", "2024.01.15", "2024년 1월 15일", "15,000원", "$1,234.56", "v2.60.0", "1.3.8", "Llama-2-7B",
    "SOLAR-10.7B", "15B 토큰", "46,336", "ISBN 978-89-1234-567-8", "20240115123045", "1705312345678", "12:30:45",
    "임진왜란(1592-1598)", "람보1.2.3.4 씨리즈", "버전 1.2.3.4", "Abc::Def", "4111-1111-1111-1112", "921301-1234567",
    "계좌 개설 2024-01-15-001", "법인등록번호 110111-1234567", "0.0.0.0/0", "10.0.0.256",
])
def test_decoys_untouched(text):
    assert scrub_pii(text, CFG) == (text, {})


def test_luhn_and_rrn_dates():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert scrub("000229-3123456") == "<|rrn|>"  # 2000 was a leap year
    assert scrub("010229-3123456") == "010229-3123456"  # 2001 was not
    assert scrub("990431-1234567") == "990431-1234567"  # April has 30 days


def test_rrn_check_digit_is_optional():
    valid, invalid = "900101-1234568", "900101-1234567"  # 8 is the check digit of 900101123456
    assert scrub(valid, rrn_checksum=True) == "<|rrn|>"
    assert scrub(invalid, rrn_checksum=True) == invalid
    assert scrub(invalid) == "<|rrn|>"  # numbers issued since Oct 2020 carry no check digit
    assert scrub("9001011234568") == "<|rrn|>"  # bare 13 digits need the check digit or context


def test_account_needs_context_and_glued_digits_never_match():
    assert scrub("주문번호 123456-12-123456") == "주문번호 123456-12-123456"
    assert scrub("우리은행 1002-123-456789") == "우리은행 <|account|>"
    assert scrub("x010-1234-5678") == "x010-1234-5678"
    assert scrub("2024-010-1234-5678") == "2024-010-1234-5678"


def test_types_subset_disabled_and_idempotent():
    text = "kim@naver.com 010-1234-5678"
    assert scrub(text, types=["email"]) == "<|email|> 010-1234-5678"
    assert scrub(text, enabled=False) == text
    once = scrub(text)
    assert scrub(once) == once == "<|email|> <|tel|>"
    with pytest.raises(ConfigError, match="types"):
        PiiConfig(types=["ssn"])


def test_counts_multiple_spans():
    out, counts = scrub_pii("010-1111-2222, 010-3333-4444 그리고 a@b.com, c@d.kr", CFG)
    assert counts == {"tel": 2, "email": 2} and out.count("<|tel|>") == 2


def test_labelled_set_precision_and_recall():
    examples = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]
    positives = [e for e in examples if e["pii"]]
    decoys = [e for e in examples if not e["pii"]]
    assert sum(len(e["pii"]) for e in positives) >= 150 and len(decoys) >= 150
    assert {p["type"] for e in positives for p in e["pii"]} == set(PLACEHOLDERS)
    scores = score_labelled(examples, CFG)
    total = {k: sum(s[k] for s in scores.values()) for k in ("tp", "fp", "fn")}
    assert total["tp"] / (total["tp"] + total["fp"]) >= 0.98
    assert total["tp"] / (total["tp"] + total["fn"]) >= 0.97
    for kind, s in scores.items():
        assert s["tp"] / (s["tp"] + s["fp"]) >= 0.95, kind
        assert s["tp"] / (s["tp"] + s["fn"]) >= 0.9, kind
    for e in decoys:
        out = scrub_pii(e["text"], CFG)[0]
        assert all(k in out for k in e["keep"]), e["text"]
