"""Validate: reader rejects pass through, non-text and blank text, binary junk (control
characters) and mojibake (U+FFFD) are rejected above their thresholds, stray ones are not."""

from __future__ import annotations

import pytest

from kopretrain.config.data_stages import ValidateConfig
from kopretrain.data.validate import validate_record, validate_text
from kopretrain.errors import ConfigError

CFG = ValidateConfig()


def test_reader_reason_wins():
    assert validate_record({"text": None, "reason": "malformed_json", "raw": "{"}, CFG) == "malformed_json"
    assert validate_record({"text": "좋은 문장입니다", "reason": None, "raw": None}, CFG) is None


@pytest.mark.parametrize("text,reason", [
    (None, "non_string_text"), (42, "non_string_text"), ("", "empty_text"), (" \n\t ", "empty_text"),
    ("PK\x03\x04\x14\x00\x06\x00binary\x00\x00", "control_chars"),
    ("\ufffd\ufffd\ufffd 깨진 \ufffd\ufffd 글자", "replacement_chars"),
])
def test_rejects(text, reason):
    assert validate_text(text, CFG) == reason


def test_stray_characters_under_the_threshold_pass():
    text = "정상적인 긴 문장 안에 제어 문자가 하나\x07 섞여 있고 깨진 글자도 하나\ufffd 있습니다. " + "평범한 문장이 이어집니다. " * 8
    assert validate_text(text, CFG) is None  # normalize removes the control character later
    assert validate_text(text, ValidateConfig(max_control_char_ratio=0.0)) == "control_chars"
    assert validate_text(text, ValidateConfig(max_replacement_char_ratio=0.0)) == "replacement_chars"
    assert validate_text("탭\t과 줄바꿈\n은 제어 문자로 치지 않는다", ValidateConfig(max_control_char_ratio=0.0)) is None


def test_config_validation():
    with pytest.raises(ConfigError, match="max_control_char_ratio"):
        ValidateConfig(max_control_char_ratio=-0.1)
