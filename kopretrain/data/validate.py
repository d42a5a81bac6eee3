"""Validate stage of `prepare`: is a read record usable text at all?

    reason = validate_record(record, ValidateConfig())   # None = fine, else a reject reason

A record the reader already rejected keeps its reason (invalid_utf8, malformed_json, too_long,
...). Otherwise the text must be a non-blank str with few control characters (a share above
`max_control_char_ratio` means binary data read as text; a stray one is removed later by
normalize) and few U+FFFD replacement characters (mojibake from an earlier lossy conversion).
The counts are regex scans in C, and most texts skip them after one `search` finds nothing.
Run its tests: `.venv/bin/python -m pytest tests/data/test_validate.py -q`.
"""

from __future__ import annotations

import re
from typing import Optional

from kopretrain.config.data_stages import ValidateConfig

_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]+")  # not tab, newlines, form feed, NEL
_REPLACEMENT = re.compile("\ufffd+")

REASONS = ("non_string_text", "empty_text", "control_chars", "replacement_chars")


def _share(pattern: re.Pattern, text: str) -> float:
    return sum(map(len, pattern.findall(text))) / len(text)


def validate_text(text, cfg: ValidateConfig) -> Optional[str]:
    """None if `text` is acceptable, else the reason."""
    if not isinstance(text, str):
        return "non_string_text"
    if not text or text.isspace():
        return "empty_text"
    if _CONTROL.search(text) and _share(_CONTROL, text) > cfg.max_control_char_ratio:
        return "control_chars"
    if "\ufffd" in text and _share(_REPLACEMENT, text) > cfg.max_replacement_char_ratio:
        return "replacement_chars"
    return None


def validate_record(record: dict, cfg: ValidateConfig) -> Optional[str]:
    """The record's reject reason: the reader's, or one from `validate_text`."""
    if record.get("reason"):
        return record["reason"]
    return validate_text(record.get("text"), cfg)
