"""PII scrubbing stage of `prepare`: replace personal data with typed placeholders.

    scrub_pii("연락처 010-1234-5678, 메일 kim@naver.com", PiiConfig())
    -> ("연락처 <|tel|>, 메일 <|email|>", {"tel": 1, "email": 1})

Types (`PLACEHOLDERS`): e-mail; Korean phone numbers (mobile, landline with or without the
(area) code in parentheses, +82, 070/050x/080, 15xx/16xx/18xx service numbers); resident
registration numbers (date checked; the check digit optional since numbers issued from Oct
2020 have none; masked `900101-1******` too); card numbers (Luhn, or masked); bank account
numbers (digit groups only with 계좌/은행/입금/a bank name just before: high precision); IPv4
and IPv6; passports (M12345678, new M123A4567); driver licences (11-12-345678-90).

Precision comes from boundaries and validation, not from breadth: digits glued to letters or
to more digit groups never match, so dates (2024-01-15), prices (15,000원), versions (v2.60.0,
1.3.8), model names (Llama-2-7B, SOLAR-10.7B), counts (46,336), ISBNs and timestamps are left
alone. `bench/pii_eval.py` measures precision/recall per type on tests/data/pii_labelled.jsonl.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

from kopretrain.config.data_stages import PiiConfig

PLACEHOLDERS = {"email": "<|email|>", "tel": "<|tel|>", "rrn": "<|rrn|>", "card": "<|card|>",
                "account": "<|account|>", "ip": "<|ip|>", "passport": "<|passport|>", "license": "<|license|>"}

_L = r"(?<![0-9A-Za-z])(?<![0-9A-Za-z][-.])"  # not glued to a letter/digit or to a previous group
_R = r"(?![0-9A-Za-z])(?![-.][0-9])"
_S = r"[-. ]?"

EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])")
TEL = re.compile(
    _L + r"(?:"
    r"\+82[-. ]?(?:\(0\)[-. ]?)?(?:1[016789]|2|[3-6][1-5]|70)[-. ]?\d{3,4}[-. ]?\d{4}"  # +82 10 1234 5678
    r"|01[016789]" + _S + r"\d{3,4}" + _S + r"\d{4}"  # mobile, any or no separator
    r"|\(0(?:2|[3-6][1-5]|70|50[2-8]|80)\)[ ]?\d{3,4}[-. ]\d{4}"  # (02) 123-4567
    r"|0(?:2|[3-6][1-5]|70|50[2-8]|80|60)[-. ]\d{3,4}[-. ]\d{4}"  # 02-123-4567, 0505-123-4567
    r"|(?P<svc>1[568]\d\d)[-.](?P<svc2>\d{4})"  # 1588-1234
    r")" + _R)
_TEL_CONTEXT = re.compile(r"전화|연락|문의|고객센터|콜센터|대표번호|상담|tel|☎|call", re.I)
RRN = re.compile(r"(?<![0-9A-Za-z-])(?P<yy>\d\d)(?P<mm>0[1-9]|1[0-2])(?P<dd>0[1-9]|[12]\d|3[01])"
                 r"(?P<sep>\s?[-–]\s?|)(?P<g>[1-8])(?P<rest>\d{6}|[*●○xX]{6})(?![0-9A-Za-z])")
_RRN_CONTEXT = re.compile(r"주민|등록번호|생년월일|외국인")
CARD = re.compile(r"(?<![0-9A-Za-z-])(?:"
                  r"(?P<plain>[3-69]\d{14,15})"
                  r"|\d{4}(?P<s>[- ])\d{4}(?P=s)\d{4}(?P=s)\d{4}"
                  r"|3[47]\d\d(?P<s2>[- ])\d{6}(?P=s2)\d{5}"
                  r"|(?P<masked>\d{4}[- ]\d{2}[*xX]{2}[- ][*xX]{4}[- ]\d{4})"
                  r")(?![0-9A-Za-z])(?![-.][0-9])")
ACCOUNT = re.compile(_L + r"(?:\d{2,6}(?:-\d{2,7}){1,3}|\d{10,14})" + _R)
_ACCOUNT_CONTEXT = re.compile(
    r"계좌|은행|입금|송금|이체|예금주|통장|뱅크|금고|우체국|[국농수신]협|"
    r"국민|신한|우리|하나|기업|농협|씨티|SC제일|KB|NH|IBK|bank", re.I)
PASSPORT = re.compile(r"(?<![0-9A-Za-z-])[MSRGDT](?:\d{8}|\d{3}[A-Z]\d{4})(?![0-9A-Za-z-])")
LICENSE = re.compile(r"(?<![0-9A-Za-z-])(?:(?:1[1-9]|2[0-8])-|(?:서울|부산|경기|강원|충북|충남|전북|전남|경북|경남|제주|대구|인천|광주|대전|울산)\s?)"
                     r"\d{2}-\d{6}-\d{2}(?![0-9A-Za-z])(?![-.][0-9])")
IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                  r"(?![0-9A-Za-z])(?!\.\d)")
_VERSION_CONTEXT = re.compile(r"(?:version|ver\.?|버전|v)\s*$", re.I)
IPV6 = re.compile(r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")
_HAS_4_DIGITS = re.compile(r"\d{4}")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def rrn_ok(m: re.Match, text: str, cfg: PiiConfig) -> bool:
    """A real calendar date for the century the 7th digit gives, and (optionally) the check digit."""
    g = int(m["g"])
    year = (1900 if g in (1, 2, 5, 6) else 2000) + int(m["yy"])
    month, day = int(m["mm"]), int(m["dd"])
    days = (31, 29 if _leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
    if day > days:
        return False
    masked = not m["rest"].isdigit()
    digits = m["yy"] + m["mm"] + m["dd"] + m["g"] + m["rest"]
    checksum_ok = not masked and (11 - sum(int(d) * w for d, w in zip(digits, (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5))) % 11) % 10 == int(digits[12])
    if cfg.rrn_checksum and not masked and not checksum_ok:
        return False
    if not m["sep"]:  # 13 bare digits may be a millisecond timestamp: needs a check digit or context
        return checksum_ok or bool(_RRN_CONTEXT.search(text, max(0, m.start() - 20), m.start()))
    return True


def _sub(pattern: re.Pattern, kind: str, text: str, ok: Callable[[re.Match], bool] | None = None) -> tuple[str, int]:
    count = 0
    placeholder = PLACEHOLDERS[kind]

    def repl(m: re.Match) -> str:
        nonlocal count
        if ok is not None and not ok(m):
            return m.group(0)
        count += 1
        return placeholder

    return pattern.sub(repl, text), count


def _tel_ok(m: re.Match) -> bool:
    if m["svc"] is None:
        return True
    a, b = int(m["svc"]), int(m["svc2"])
    looks_like_years = 1500 <= a < b <= 2100 and b - a < 300  # "1592-1598" (a year range)
    return not looks_like_years or bool(_TEL_CONTEXT.search(m.string, max(0, m.start() - 20), m.start()))


def _card_ok(m: re.Match) -> bool:
    return bool(m["masked"]) or luhn_ok(re.sub(r"\D", "", m.group(0)))


def _account_ok(m: re.Match, window: int) -> bool:
    digits = sum(c.isdigit() for c in m.group(0))
    return 10 <= digits <= 14 and bool(_ACCOUNT_CONTEXT.search(m.string, max(0, m.start() - window), m.start()))


def _ipv4_ok(m: re.Match) -> bool:
    return not _VERSION_CONTEXT.search(m.string, max(0, m.start() - 12), m.start())


def _ipv6_ok(m: re.Match) -> bool:
    s = m.group(0)
    if not any(c.isdigit() for c in s) or (s.count(":") < 7 and "::" not in s):
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def scrub_pii(text: str, cfg: PiiConfig) -> tuple[str, dict[str, int]]:
    """(text with PII replaced by placeholders, {type: replacements}) ; types with 0 are omitted."""
    counts: dict[str, int] = {}
    if not cfg.enabled:
        return text, counts
    types = cfg.types
    numeric = _HAS_4_DIGITS.search(text) is not None
    steps = (
        ("email", "@" in text, lambda t: _sub(EMAIL, "email", t)),
        ("rrn", numeric, lambda t: _sub(RRN, "rrn", t, lambda m: rrn_ok(m, t, cfg))),
        ("card", numeric, lambda t: _sub(CARD, "card", t, _card_ok)),
        ("tel", numeric, lambda t: _sub(TEL, "tel", t, _tel_ok)),
        ("license", numeric, lambda t: _sub(LICENSE, "license", t)),
        ("account", numeric, lambda t: _sub(ACCOUNT, "account", t, lambda m: _account_ok(m, cfg.account_context_chars))),
        ("passport", numeric, lambda t: _sub(PASSPORT, "passport", t)),
        ("ip", "." in text, lambda t: _sub(IPV4, "ip", t, _ipv4_ok)),
        ("ip", "::" in text or text.count(":") >= 7, lambda t: _sub(IPV6, "ip", t, _ipv6_ok)),
    )
    for kind, applies, step in steps:
        if applies and kind in types:
            text, n = step(text)
            if n:
                counts[kind] = counts.get(kind, 0) + n
    return text, counts
