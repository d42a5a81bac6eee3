"""PII scrubbing stage of `prepare`: replace personal data with typed placeholders.

    scrub_pii("연락처 010-1234-5678, 메일 kim@naver.com", PiiConfig())
    -> ("연락처 <|tel|>, 메일 <|email|>", {"tel": 1, "email": 1})

Types (`PLACEHOLDERS`): e-mail; Korean phone numbers (mobile, landline with or without the
(area) code in parentheses, +82, 070/050x/080, 15xx/16xx/18xx service numbers); resident
registration numbers (date checked; the check digit optional since numbers issued from Oct
2020 have none; masked `900101-1******` too); card numbers (Luhn, or masked); bank account
numbers (digit groups only next to 계좌/은행/입금/a bank name: high precision); IPv4
and IPv6; passports (M12345678, new M123A4567); driver licences (11-12-345678-90).

Precision comes from boundaries and validation, not from breadth: digits glued to letters or
to more digit groups never match, so dates (2024-01-15), prices (15,000원), versions (v2.60.0,
1.3.8), model names (Llama-2-7B, SOLAR-10.7B), counts (46,336), ISBNs and timestamps are left
alone. `bench/pii_eval.py` prints precision/recall per type on tests/data/pii_labelled.jsonl.

Speed: every pattern starts with a literal or a digit class, so `re` skips ahead with its
prefix scan; the left-boundary test is done on the few matches, in `Rule.left_ok`, rather than
as a leading lookbehind (which makes `re` try every position: 20-40x slower on long texts).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Optional

from kopretrain.config.data_stages import PiiConfig

PLACEHOLDERS = {"email": "<|email|>", "tel": "<|tel|>", "rrn": "<|rrn|>", "card": "<|card|>",
                "account": "<|account|>", "ip": "<|ip|>", "passport": "<|passport|>", "license": "<|license|>"}
_R = r"(?![0-9A-Za-z])(?![-.][0-9])"  # not glued to a following letter/digit or digit group
_REGIONS = "서울 부산 경기 강원 충북 충남 전북 전남 경북 경남 제주 대구 인천 광주 대전 울산".split()

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])")
_SEP = r"(?: ?[-.] ?| )?"  # 010-1234-5678, 010 1234 5678, 010.1234.5678, 010 - 1234 - 5678, none
TEL = re.compile(
    r"\+82[-. ]?(?:\(0\)[-. ]?)?(?:1[016789]|2|[3-6][1-5]|70)" + _SEP + r"\d{3,4}" + _SEP + r"\d{4}" + _R  # +82 10 1234 5678
    + r"|82[-. ]1[016789][-. ]\d{3,4}[-. ]\d{4}" + _R  # 82-10-1234-5678 (the + dropped)
    + r"|\(0(?:2|[3-6][1-5]|70|50[2-8]|80)\) ?\d{3,4}[-. ]\d{4}" + _R  # (02) 123-4567
    + r"|01[016789]" + _SEP + r"\d{3,4}" + _SEP + r"\d{4}" + _R  # mobile
    + r"|0(?:2|[3-6][1-5]|70|50[2-8]|80|60)(?:[-. ]|\) ?)\d{3,4}[-. ]\d{4}" + _R  # 02-123-4567, 02)345-6789
    + r"|(?P<svc>1[568]\d\d)[-.](?P<svc2>\d{4})" + _R)  # 1588-1234
RRN = re.compile(r"(?P<yy>\d\d)(?P<mm>0[1-9]|1[0-2])(?P<dd>0[1-9]|[12]\d|3[01])"
                 r"(?P<sep> ?[-–] ?|)(?P<g>[1-8])(?P<rest>\d{6}|[*●○xX]{6})(?![0-9A-Za-z])")
CARD = re.compile(r"\d(?:(?P<plain>\d{14,15})"
                  r"|\d{3}(?P<s>[- ])\d{4}(?P=s)\d{4}(?P=s)\d{4}"
                  r"|\d{3}(?P<s2>[- ])\d{6}(?P=s2)\d{5}"
                  r"|(?P<masked>\d{3}[- ]\d{2}[*xX]{2}[- ][*xX]{4}[- ]\d{4})"
                  r")" + _R)
ACCOUNT = re.compile(r"\d(?:\d{1,5}(?:-\d{2,7}){1,3}|\d{9,13})" + _R)
PASSPORT = re.compile(r"[MSRGDT](?:\d{8}|\d{3}[A-Z]\d{4})(?![0-9A-Za-z-])")
LICENSE = re.compile("|".join([r"1[1-9]-", r"2[0-8]-"] + [rf"{r} ?" for r in _REGIONS])
                     .join(["(?:", r")\d{2}-\d{6}-\d{2}"]) + _R)
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![0-9A-Za-z])(?!\.\d)")
IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")

_TEL_CONTEXT = re.compile(r"전화|연락|문의|고객센터|콜센터|대표번호|상담|tel|☎|call", re.I)
_RRN_CONTEXT = re.compile(r"주민|등록번호|생년월일|외국인")
_CORPORATE = re.compile(r"법인|사업자")  # a corporate registration number has the same 6-7 shape
_ACCOUNT_CONTEXT = re.compile(r"계좌|은행|입금|송금|이체|예금주|통장|뱅크|금고|우체국|[국농수신]협|"
                              r"국민|신한|우리|하나|기업|씨티|SC제일|KB|NH|IBK|bank", re.I)
_VERSION_CONTEXT = re.compile(r"(?:version|ver\.?|버전|v)\s*$", re.I)
_HAS_4_DIGITS = re.compile(r"\d{4}")
_ALNUM = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


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


def _before(m: re.Match, width: int) -> str:
    return m.string[max(0, m.start() - width):m.start()]


def rrn_ok(m: re.Match, cfg: PiiConfig) -> bool:
    """A real calendar date for the century the 7th digit gives, and (optionally) the check digit."""
    if _CORPORATE.search(_before(m, 12)):
        return False
    g = int(m["g"])
    year = (1900 if g in (1, 2, 5, 6) else 2000) + int(m["yy"])
    month, day = int(m["mm"]), int(m["dd"])
    if day > (31, 29 if _leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]:
        return False
    if not m["rest"].isdigit():
        return True  # masked: 900101-1******
    digits = m["yy"] + m["mm"] + m["dd"] + m["g"] + m["rest"]
    check = (11 - sum(int(d) * w for d, w in zip(digits, (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5))) % 11) % 10
    if cfg.rrn_checksum and check != int(digits[12]):
        return False
    if not m["sep"]:  # 13 bare digits may be a millisecond timestamp: needs a check digit or context
        return check == int(digits[12]) or bool(_RRN_CONTEXT.search(_before(m, 20)))
    return True


def tel_ok(m: re.Match, cfg: PiiConfig) -> bool:
    if m["svc"] is None:
        return True
    a, b = int(m["svc"]), int(m["svc2"])
    looks_like_years = 1500 <= a < b <= 2100 and b - a < 300  # "1592-1598" is a year range
    return not looks_like_years or bool(_TEL_CONTEXT.search(_before(m, 20)))


def card_ok(m: re.Match, cfg: PiiConfig) -> bool:
    s = m.group(0)
    if m["masked"]:
        return True
    if m["plain"] and s[0] not in "34569":  # bare 15-16 digits: only with a card network prefix
        return False
    return luhn_ok(s.replace("-", "").replace(" ", ""))


_DATE_LIKE = re.compile(r"(?:19|20)\d\d-(?:0?[1-9]|1[0-2])-")


def account_ok(m: re.Match, cfg: PiiConfig) -> bool:
    s = m.group(0)
    digits = len(s) - s.count("-")
    if not 10 <= digits <= 14 or _DATE_LIKE.match(s):  # "2024-01-15-001" is a dated serial number
        return False
    return bool(_ACCOUNT_CONTEXT.search(_before(m, cfg.account_context_chars))
                or _ACCOUNT_CONTEXT.search(m.string, m.end(), m.end() + 8))  # "110-123-456789(신한)"


def ipv4_ok(m: re.Match, cfg: PiiConfig) -> bool:
    octets = m.group(0).split(".")
    if any(int(o) > 255 or (len(o) > 1 and o[0] == "0") for o in octets):
        return False
    if octets[0] in ("0", "255"):  # 0.0.0.0/0, 255.255.255.0: rules and netmasks, nobody's address
        return False
    return not _VERSION_CONTEXT.search(_before(m, 12))


def ipv6_ok(m: re.Match, cfg: PiiConfig) -> bool:
    s = m.group(0)
    if not any(c.isdigit() for c in s) or (s.count(":") < 7 and "::" not in s):
        return False  # "Abc::Def" (code), "12:30:45" (a time)
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Rule:
    """One PII pattern: `left` = characters that must not touch the match on the left
    ('alnum' = ASCII letters/digits, 'word' = any letter/digit incl. Hangul), plus `-`/`.`
    glue when `no_group_before`; `check` validates the match."""

    kind: str
    pattern: re.Pattern
    left: str = "alnum"
    no_group_before: bool = True
    check: Optional[Callable[[re.Match, PiiConfig], bool]] = None
    needs: Callable[[str], bool] = lambda text: _HAS_4_DIGITS.search(text) is not None

    def left_ok(self, s: str, start: int) -> bool:
        if start == 0:
            return True
        c = s[start - 1]
        if c in _ALNUM or (self.left == "word" and c.isalnum()):
            return False
        if self.no_group_before and c in "-." and start >= 2 and s[start - 2] in _ALNUM:
            return False  # a further group of a longer number: 2024-010-1234-5678
        return True


# Applied in this order: longer, more specific shapes first, so a card or a resident number is
# never half-eaten by the phone pattern, and phone numbers are gone before the account rule.
RULES = (
    Rule("email", EMAIL, left="none", no_group_before=False, needs=lambda t: "@" in t),
    Rule("rrn", RRN, check=rrn_ok),
    Rule("card", CARD, check=card_ok),
    Rule("tel", TEL, check=tel_ok),
    Rule("license", LICENSE),
    Rule("account", ACCOUNT, check=account_ok),
    Rule("passport", PASSPORT),
    Rule("ip", IPV4, left="word", check=ipv4_ok, needs=lambda t: "." in t),
    Rule("ip", IPV6, left="word", check=ipv6_ok, needs=lambda t: "::" in t or t.count(":") >= 7),
)


def _apply(rule: Rule, text: str, cfg: PiiConfig) -> tuple[str, int]:
    count = 0
    placeholder = PLACEHOLDERS[rule.kind]

    def repl(m: re.Match) -> str:
        nonlocal count
        if rule.left != "none" and not rule.left_ok(text, m.start()):
            return m.group(0)
        if rule.check is not None and not rule.check(m, cfg):
            return m.group(0)
        count += 1
        return placeholder

    return rule.pattern.sub(repl, text), count


def scrub_pii(text: str, cfg: PiiConfig) -> tuple[str, dict[str, int]]:
    """(text with PII replaced by placeholders, {type: replacements}); types with 0 are omitted."""
    counts: dict[str, int] = {}
    if not cfg.enabled:
        return text, counts
    for rule in RULES:
        if rule.kind in cfg.types and rule.needs(text):
            text, n = _apply(rule, text, cfg)
            if n:
                counts[rule.kind] = counts.get(rule.kind, 0) + n
    return text, counts


def score_labelled(examples: list[dict], cfg: PiiConfig) -> dict[str, dict[str, int]]:
    """Per type {tp, fp, fn} on labelled examples {"text", "pii": [{"type", "value"}], "keep": [str]}.

    A labelled value counts as found when it is gone from the output and a placeholder of its
    type took its place; extra placeholders are false positives; a `keep` string (a decoy: a
    date, a price, a version...) that no longer appears intact counts as a false positive of
    the type whose placeholder appeared."""
    scores = {kind: {"tp": 0, "fp": 0, "fn": 0} for kind in PLACEHOLDERS}
    for ex in examples:
        out, counts = scrub_pii(ex["text"], cfg)
        gold: dict[str, int] = {}
        found: dict[str, int] = {}
        for span in ex.get("pii", []):
            gold[span["type"]] = gold.get(span["type"], 0) + 1
            if span["value"] not in out:
                found[span["type"]] = found.get(span["type"], 0) + 1
        for kind in PLACEHOLDERS:
            tp = min(found.get(kind, 0), counts.get(kind, 0))
            scores[kind]["tp"] += tp
            scores[kind]["fp"] += counts.get(kind, 0) - tp
            scores[kind]["fn"] += gold.get(kind, 0) - tp
    return scores
