"""Quality filters of `prepare` (Gopher / C4 / EleutherAI dps style, Korean-aware).

    qf = QualityFilter(FilterConfig())
    qf.check("ㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋ", "ko")   ->  "char_repetition"
    qf.check("오늘 날씨가 정말 좋네요.", "ko")   ->  None (keep)

Each filter in `FILTERS` returns None (keep) or its reason; the first reason wins, cheap filters
first. `clean_records` counts `dropped_<reason>`. Ratios are over non-space characters (the
Hangul ratio over letters). Words are
whitespace tokens (Korean eojeol: a word plus its particles), which is what Gopher's repetition
statistics need; character-level repetition ("ㅋㅋㅋㅋ", "!!!!") has its own filter because it
lives inside one eojeol. Bad words match as substrings: Korean attaches particles and endings.
Thresholds were tuned on the shipped news comments, reviews, chat, NLI and law text (see the
README section and `tests/data/test_filters.py`).
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from typing import Callable, Optional

from kopretrain.config.data_stages import FilterConfig
from kopretrain.errors import UserError
from kopretrain.paths import resolve_path

_HANGUL = re.compile("[\uac00-\ud7a3\u3131-\u318e\u1100-\u11ff]+")
_LETTERS = re.compile(r"[^\W\d_]+")
_DIGITS = re.compile("[0-9\uff10-\uff19]+")
_SYMBOLS = re.compile(r"[^\w\s]+|_+")
_CHAR_RUNS = re.compile(r"(\S)\1{3,}")


class Doc:
    """A document with the statistics several filters share, computed once."""

    __slots__ = ("text", "words", "num_nonspace")

    def __init__(self, text: str):
        self.text = text
        self.words = text.split()
        self.num_nonspace = sum(map(len, self.words))


def _share(pattern: re.Pattern, doc: Doc) -> float:
    return sum(map(len, pattern.findall(doc.text))) / max(doc.num_nonspace, 1)


def length(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    n = len(doc.text)
    if n < cfg.min_chars:
        return "too_few_chars"
    if cfg.max_chars and n > cfg.max_chars:
        return "too_many_chars"
    if len(doc.words) < cfg.min_words:
        return "too_few_words"
    if cfg.max_words and len(doc.words) > cfg.max_words:
        return "too_many_words"
    return None


def hangul_ratio(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    # Over letters only: digits, symbols and e-mail addresses have their own filters, and a
    # Korean sentence with a URL or a price in it is still Korean.
    if cfg.min_hangul_ratio <= 0 or domain not in cfg.hangul_domains:
        return None
    letters = sum(map(len, _LETTERS.findall(doc.text)))
    hangul = sum(map(len, _HANGUL.findall(doc.text)))
    if hangul < cfg.min_hangul_ratio * max(letters, 1):
        return "hangul_ratio"
    return None


def symbol_digit_ratio(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    if cfg.max_symbol_ratio < 1 and _share(_SYMBOLS, doc) > cfg.max_symbol_ratio:
        return "symbol_ratio"
    if cfg.max_digit_ratio < 1 and _share(_DIGITS, doc) > cfg.max_digit_ratio:
        return "digit_ratio"
    return None


def char_repetition(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    if cfg.max_char_repeat_ratio < 1 and _CHAR_RUNS.search(doc.text):
        runs = sum(len(m.group(0)) for m in _CHAR_RUNS.finditer(doc.text))
        if runs / max(doc.num_nonspace, 1) > cfg.max_char_repeat_ratio:
            return "char_repetition"
    return None


def dup_lines(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    if "\n" not in doc.text:
        return None
    lines = [line for line in doc.text.split("\n") if line.strip()]
    if len(lines) < 2 or len(set(lines)) == len(lines):
        return None
    seen, dup, dup_chars = set(), 0, 0
    for line in lines:
        if line in seen:
            dup += 1
            dup_chars += len(line)
        seen.add(line)
    if dup / len(lines) > cfg.max_dup_line_ratio:
        return "dup_lines"
    if dup_chars / max(sum(map(len, lines)), 1) > cfg.max_dup_line_char_ratio:
        return "dup_line_chars"
    return None


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters of word n-grams that repeat an earlier n-gram (Gopher; overlaps skipped)."""
    seen, repeated, i = set(), 0, 0
    while i <= len(words) - n:
        gram = tuple(words[i:i + n])
        if gram in seen:
            repeated += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def ngram_repetition(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    words = doc.words
    if len(words) < cfg.min_words_for_ngram_filters or len(set(words)) == len(words):
        return None  # no word repeats, so no n-gram does
    total = doc.num_nonspace
    for n, limit in sorted(cfg.max_top_ngram_ratios.items()):
        n = int(n)
        grams = Counter(zip(*(words[i:] for i in range(n))))
        if not grams:
            continue
        gram, count = grams.most_common(1)[0]
        # Gopher counts a gram seen twice; in a 10-30 word text (a comment, a Q/A pair) saying a
        # phrase twice is style, three times is spam. In long documents the difference is nil.
        if count >= 3 and count * sum(map(len, gram)) / total > limit:
            return "top_ngram"
    for n, limit in sorted(cfg.max_dup_ngram_ratios.items()):
        repeated = _dup_ngram_chars(words, int(n))
        if repeated == 0:
            break  # a repeated (n+1)-gram contains a repeated n-gram: none longer either
        if repeated / total > limit:
            return "dup_ngram"
    return None


@functools.lru_cache(maxsize=8)
def _bad_word_pattern(path: str, mtime_ns: int) -> Optional[re.Pattern]:
    with open(path, encoding="utf-8") as f:
        words = {w.strip() for w in f if w.strip() and not w.lstrip().startswith("#")}
    if not words:
        return None
    # Longest first so the alternation prefers the longer of two overlapping words.
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w))), re.I)


def bad_word_pattern(cfg: FilterConfig) -> Optional[re.Pattern]:
    """The compiled bad-word list (cached per file and mtime), None if unset or empty."""
    if not cfg.bad_words_path:
        return None
    path = resolve_path(cfg.bad_words_path)
    if not path.is_file():
        raise UserError(f"filter.bad_words_path: {cfg.bad_words_path!r} is not a file")
    return _bad_word_pattern(str(path), os.stat(path).st_mtime_ns)


# The filters in the order they run (cheap first); each returns None or its reason.
FILTERS: tuple[Callable[[Doc, FilterConfig, str], Optional[str]], ...] = (
    length, hangul_ratio, symbol_digit_ratio, char_repetition, dup_lines, ngram_repetition,
)
REASONS = ("too_few_chars", "too_many_chars", "too_few_words", "too_many_words", "hangul_ratio",
           "symbol_ratio", "digit_ratio", "char_repetition", "dup_lines", "dup_line_chars",
           "top_ngram", "dup_ngram", "bad_words")


class QualityFilter:
    """All quality filters of a FilterConfig, with per-domain overrides resolved once."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self._per_domain: dict[str, FilterConfig] = {}
        self.bad_words = bad_word_pattern(cfg)

    def check(self, text: str, domain: str) -> Optional[str]:
        """None to keep `text`, else the reason it is dropped."""
        cfg = self._per_domain.get(domain)
        if cfg is None:
            cfg = self._per_domain[domain] = self.cfg.for_domain(domain)
        doc = Doc(text)
        for f in FILTERS:
            reason = f(doc, cfg, domain)
            if reason:
                return reason
        if self.bad_words is not None:
            hits = self.bad_words.findall(text, 0, len(text)) if cfg.max_bad_words else self.bad_words.search(text)
            if hits and (not cfg.max_bad_words or len(hits) > cfg.max_bad_words):
                return "bad_words"
        return None
