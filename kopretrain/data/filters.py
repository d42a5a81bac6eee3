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
from itertools import accumulate, compress, count
from operator import ne
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

    __slots__ = ("text", "words", "num_nonspace", "num_hangul")

    def __init__(self, text: str):
        self.text = text
        self.words = text.split()
        self.num_nonspace = sum(map(len, self.words))
        self.num_hangul = 0  # set by hangul_ratio where it runs; lets later filters skip scans


def _count(pattern: re.Pattern, text: str) -> int:
    return sum(map(len, pattern.findall(text)))


def _share(pattern: re.Pattern, doc: Doc) -> float:
    return _count(pattern, doc.text) / max(doc.num_nonspace, 1)


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
    doc.num_hangul = _count(_HANGUL, doc.text)
    if doc.num_hangul >= cfg.min_hangul_ratio * doc.num_nonspace:
        return None  # letters <= non-space characters: no need to count them
    if doc.num_hangul < cfg.min_hangul_ratio * max(_count(_LETTERS, doc.text), 1):
        return "hangul_ratio"
    return None


def symbol_digit_ratio(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    other = doc.num_nonspace - doc.num_hangul  # symbols and digits are among these
    ns = max(doc.num_nonspace, 1)
    if cfg.max_symbol_ratio < 1 and other > cfg.max_symbol_ratio * ns and _share(_SYMBOLS, doc) > cfg.max_symbol_ratio:
        return "symbol_ratio"
    if cfg.max_digit_ratio < 1 and other > cfg.max_digit_ratio * ns and _share(_DIGITS, doc) > cfg.max_digit_ratio:
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


def _dup_ngram_chars(words: list[str], n: int, prefix: list[int]) -> int:
    """Characters of words covered by n-grams that repeat an earlier n-gram (each counted once).

    Gopher's statistic; datatrove computes it with a left-to-right scan that skips past each
    repeat, we take the union of all repeat occurrences, which differs only where repeats
    overlap and has the property the caller relies on: the value never grows with n. All loops
    over words run inside C builtins (zip, dict, map); Python only walks the repeats."""
    grams = list(zip(*(words[i:] for i in range(n))))
    first = dict(zip(reversed(grams), range(len(grams) - 1, -1, -1)))  # gram -> first index
    if len(first) == len(grams):
        return 0
    covered, end = 0, 0
    for start in compress(count(), map(ne, map(first.__getitem__, grams), count())):
        lo, hi = max(start, end), start + n
        covered += prefix[hi] - prefix[lo]
        end = hi
    return covered


def ngram_repetition(doc: Doc, cfg: FilterConfig, domain: str) -> Optional[str]:
    words = doc.words
    if len(words) < cfg.min_words_for_ngram_filters:
        return None
    if len(set(words)) == len(words):
        return None  # no word repeats, so no n-gram does
    total = doc.num_nonspace
    if max(Counter(words).values()) >= 3:  # an n-gram seen 3 times needs its words seen 3 times
        for n, limit in sorted(cfg.max_top_ngram_ratios.items()):
            grams = Counter(zip(*(words[i:] for i in range(int(n)))))
            if not grams:
                continue
            gram, num = grams.most_common(1)[0]  # ties: the gram seen first
            # Gopher counts a gram seen twice; in a 10-30 word text (a comment, a Q/A pair)
            # saying a phrase twice is style, three times is spam. In long documents the
            # difference is nil.
            if num >= 3 and num * sum(map(len, gram)) / total > limit:
                return "top_ngram"
    prefix = [0, *accumulate(map(len, words))]
    dup_limits = sorted((int(n), limit) for n, limit in cfg.max_dup_ngram_ratios.items())
    for k, (n, limit) in enumerate(dup_limits):
        share = _dup_ngram_chars(words, n, prefix) / total
        if share > limit:
            return "dup_ngram"
        if share <= min((lim for _, lim in dup_limits[k + 1:]), default=1.0):
            break  # longer n-grams cover no more than this: they pass too
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
