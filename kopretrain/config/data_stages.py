"""Schemas of the per-record data stages of `kopretrain prepare`: sources, validation,
normalization, quality filters and PII scrubbing (bundled as `CleanConfig`).

The stage code lives in `kopretrain/data/{read,validate,normalize,filters,pii,clean}.py`;
`kopretrain/config/prepare.py` embeds these dataclasses. Constructible in code, e.g.
`CleanConfig(filter=FilterConfig(min_chars=20))`.
"""

from __future__ import annotations

import codecs
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kopretrain.config.common import require, require_choice
from kopretrain.errors import ConfigError

FORMATS = ("auto", "jsonl", "parquet", "txt", "txt_file", "csv", "tsv")
CSV_QUOTING = ("auto", "minimal", "none")
PII_TYPES = ("email", "tel", "rrn", "card", "account", "ip", "passport", "license")


def _line_safe_encoding(name: str) -> bool:
    """Files are split on b'\\n': the encoding must exist and not be UTF-16/32."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        return False
    return not canonical.startswith(("utf-16", "utf-32"))


@dataclass
class SourceConfig:
    """One input: a file, a directory (recursive) or a glob, all of one domain and format."""

    name: str = ""
    """Short name of the source; prefixes every record id (`<name>/<relative path>@<offset>`)."""
    path: str = ""
    """A file, a directory (read recursively; names starting with '.' or '_' are skipped) or a glob."""
    domain: str = ""
    """Domain the records belong to (`ko`, `en`, ...): picks per-domain filters and the packed output dir."""
    format: str = "auto"
    """auto (by extension) | jsonl | parquet | txt (a document per line) | txt_file (a document per file) | csv | tsv."""
    text_field: str = "text"
    """JSON key / parquet or CSV column holding the text; 'Q,A' joins several fields with a newline."""
    encoding: str = "utf-8"
    """Text encoding of the files (bytes that do not decode become `invalid_utf8` rejects)."""
    csv_quoting: str = "auto"
    """CSV/TSV quoting: minimal (RFC 4180 quotes; one read task per file), none (split on the delimiter; files are split into byte ranges), auto = minimal for csv, none for tsv."""
    max_record_bytes: int = 1_048_576
    """A line (or txt_file document) longer than this is rejected as `too_long` without being held in memory."""

    def __post_init__(self):
        require(bool(self.name) and "/" not in self.name, "name", "set a short source name without '/'")
        require(bool(self.path), "path", f"source {self.name!r}: set the file, directory or glob to read")
        require(bool(self.domain), "domain", f"source {self.name!r}: set the domain, e.g. ko or en")
        require_choice(self.format, FORMATS, "format")
        require(bool(self.text_fields), "text_field", "name at least one field")
        require_choice(self.csv_quoting, CSV_QUOTING, "csv_quoting")
        require(_line_safe_encoding(self.encoding), "encoding",
                f"{self.encoding!r}: not a known encoding that keeps '\\n' a single byte (utf-8, cp949, euc-kr, latin-1, ...)")
        require(self.max_record_bytes >= 1024, "max_record_bytes", "must be >= 1024")

    @property
    def text_fields(self) -> list[str]:
        """The field names of `text_field` ('Q,A' -> ['Q', 'A'])."""
        return [f.strip() for f in self.text_field.split(",") if f.strip()]


@dataclass
class ValidateConfig:
    """Checks on decoded text before normalization (rejects carry the reason)."""

    max_control_char_ratio: float = 0.01
    """Reject (`control_chars`) text whose share of C0/C1 control characters (not tab/newline) exceeds this: binary junk."""
    max_replacement_char_ratio: float = 0.01
    """Reject (`replacement_chars`) text whose share of U+FFFD exceeds this: mojibake from a broken conversion."""

    def __post_init__(self):
        require(0.0 <= self.max_control_char_ratio <= 1.0, "max_control_char_ratio", "must be in [0, 1]")
        require(0.0 <= self.max_replacement_char_ratio <= 1.0, "max_replacement_char_ratio", "must be in [0, 1]")


@dataclass
class NormalizeConfig:
    """Text normalization applied to every record before filtering."""

    unicode_nfc: bool = True
    """Unicode NFC (recomposes decomposed Hangul syllables, e.g. from macOS NFD file names)."""
    compose_compat_jamo: bool = True
    """Join split compatibility jamo into syllables ('ㅅㅐㄲㅣ' -> '새끼'), leaving emoticon runs ('ㅋㅋ', 'ㅠㅠ', 'ㅡㅡ') alone."""
    strip_html: bool = True
    """Remove HTML tags, comments and script/style bodies (block tags become line breaks)."""
    unescape_entities: bool = True
    """Decode HTML entities (&amp; &lt; &#39; &nbsp; ...)."""
    remove_control_chars: bool = True
    """Delete C0/C1 control characters other than tab and newline, and zero-width spaces/BOMs (form feeds become newlines)."""
    normalize_whitespace: bool = True
    """Unify line ends, map Unicode spaces to ' ', collapse runs of spaces and of 3+ newlines, strip."""


@dataclass
class FilterConfig:
    """Quality filters (Gopher / C4 / dps style). A limit of 0 (or 1.0 for max ratios) switches a filter off."""

    min_chars: int = 5
    """Drop (`too_few_chars`) documents with fewer characters after normalization (Korean is dense: 5 syllables make a sentence)."""
    max_chars: int = 500_000
    """Drop (`too_many_chars`) documents with more characters (0 = no limit)."""
    min_words: int = 1
    """Drop (`too_few_words`) documents with fewer whitespace-separated words (Korean comments often skip spaces: 1 by default)."""
    max_words: int = 100_000
    """Drop (`too_many_words`) documents with more words (0 = no limit)."""
    min_hangul_ratio: float = 0.4
    """Drop (`hangul_ratio`) documents of a `hangul_domains` domain whose Hangul share of letters (any script; digits and symbols excluded) is lower."""
    hangul_domains: list[str] = field(default_factory=lambda: ["ko"])
    """Domains the Hangul-ratio filter applies to."""
    max_symbol_ratio: float = 0.5
    """Drop (`symbol_ratio`) documents whose share of punctuation/symbols/emoji among non-space characters is higher (Korean comments use many '...' and '!!')."""
    max_digit_ratio: float = 0.5
    """Drop (`digit_ratio`) documents whose share of digits among non-space characters is higher (a short Korean sentence with a price and a date reaches 0.4)."""
    max_char_repeat_ratio: float = 0.5
    """Drop (`char_repetition`) documents whose share of characters in runs of >= 4 identical characters ('ㅋㅋㅋㅋ', '!!!!') is higher."""
    max_dup_line_ratio: float = 0.3
    """Drop (`dup_lines`) documents whose share of lines that repeat an earlier line is higher (Gopher)."""
    max_dup_line_char_ratio: float = 0.2
    """Drop (`dup_line_chars`) documents whose share of characters in repeated lines is higher (Gopher)."""
    max_top_ngram_ratios: dict[int, float] = field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    """n -> max share of word characters covered by the most frequent word n-gram (`top_ngram`; Gopher)."""
    max_dup_ngram_ratios: dict[int, float] = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})
    """n -> max share of word characters inside duplicated word n-grams (`dup_ngram`; Gopher)."""
    min_words_for_ngram_filters: int = 10
    """Repetition filters on word n-grams only look at documents with at least this many words."""
    bad_words_path: str = ""
    """Optional UTF-8 file, one word or phrase per line ('#' comments): documents containing more than `max_bad_words` matches are dropped (`bad_words`). Matching is by substring (Korean attaches particles)."""
    max_bad_words: int = 0
    """Allowed number of bad-word matches per document."""
    domain_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-domain values for the scalar fields above, e.g. {en: {min_chars: 50}}."""

    def __post_init__(self):
        require(self.min_chars >= 0, "min_chars", "must be >= 0")
        require(self.max_chars == 0 or self.max_chars >= self.min_chars, "max_chars", "must be 0 or >= min_chars")
        require(self.min_words >= 0, "min_words", "must be >= 0")
        require(self.max_words == 0 or self.max_words >= self.min_words, "max_words", "must be 0 or >= min_words")
        for key in ("min_hangul_ratio", "max_symbol_ratio", "max_digit_ratio", "max_char_repeat_ratio",
                    "max_dup_line_ratio", "max_dup_line_char_ratio"):
            require(0.0 <= getattr(self, key) <= 1.0, key, "must be in [0, 1]")
        for key in ("max_top_ngram_ratios", "max_dup_ngram_ratios"):
            for n, ratio in getattr(self, key).items():
                require(int(n) >= 1 and 0.0 <= float(ratio) <= 1.0, key, f"{n}: {ratio}: n must be >= 1 and the ratio in [0, 1]")
        require(self.max_bad_words >= 0, "max_bad_words", "must be >= 0")
        scalars = {f.name for f in dataclasses.fields(self)
                   if f.name not in ("hangul_domains", "max_top_ngram_ratios", "max_dup_ngram_ratios",
                                     "bad_words_path", "domain_overrides")}
        for domain, values in self.domain_overrides.items():
            for key, value in values.items():
                require(key in scalars, "domain_overrides", f"{domain}.{key}: not a scalar filter field ({sorted(scalars)})")
                require(isinstance(value, (int, float)) and not isinstance(value, bool), "domain_overrides", f"{domain}.{key}: {value!r} is not a number")
        # Check the overridden values with the same rules as the defaults.
        for domain in self.domain_overrides:
            try:
                self.for_domain(domain)
            except ConfigError as e:
                raise ConfigError("domain_overrides", f"{domain}.{e.key}: {e.message}") from None

    def for_domain(self, domain: str) -> "FilterConfig":
        """This config with `domain_overrides[domain]` applied (ints stay ints)."""
        values = self.domain_overrides.get(domain)
        if not values:
            return self
        typed = {k: type(getattr(self, k))(v) for k, v in values.items()}
        return dataclasses.replace(self, domain_overrides={}, **typed)


@dataclass
class PiiConfig:
    """PII scrubbing: each match is replaced by a typed placeholder such as `<|email|>`."""

    enabled: bool = True
    """Scrub PII at all."""
    types: list[str] = field(default_factory=lambda: list(PII_TYPES))
    """Which kinds to scrub: email, tel, rrn, card, account, ip, passport, license."""
    rrn_checksum: bool = False
    """Also require the resident-registration-number check digit (off: numbers issued since Oct 2020 have none)."""
    account_context_chars: int = 30
    """An account-number-shaped digit group is scrubbed only if 계좌/은행/입금/a bank name is within this many characters before it."""

    def __post_init__(self):
        for t in self.types:
            require_choice(t, PII_TYPES, "types")
        require(self.account_context_chars >= 1, "account_context_chars", "must be >= 1")


@dataclass
class CleanConfig:
    """Everything `clean_records` needs: validate -> normalize -> filter -> scrub PII."""

    validate: ValidateConfig = field(default_factory=ValidateConfig)
    """Checks on decoded text."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    """Text normalization."""
    filter: FilterConfig = field(default_factory=FilterConfig)
    """Quality filters."""
    pii: PiiConfig = field(default_factory=PiiConfig)
    """PII scrubbing."""
