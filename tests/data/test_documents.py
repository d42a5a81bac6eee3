"""The one reader (prepare's read + validate + NFC in one process): formats, encodings, reject
reasons by name, max_docs, and agreement with prepare's cleaning chain on what it rejects."""

from __future__ import annotations

import gzip
import json
import unicodedata
from collections import Counter

import pytest

from kopretrain.config.data_stages import CleanConfig
from kopretrain.data import read
from kopretrain.data.clean import clean_records
from kopretrain.data.documents import Documents, describe_rejected, read_documents, source_for
from kopretrain.errors import ConfigError, UserError

BAD_JSONL = (
    json.dumps({"text": "첫 문서입니다."}, ensure_ascii=False).encode() + b"\n"
    + b'{"text": 123}\n'
    + b'{"text": "\xff\xfe broken"}\n'
    + b'{"text": "unclosed\n'
    + b'{"text": null}\n'
    + b'{"title": "no text"}\n'
    + b'["not", "an", "object"]\n'
    + b"\n"
    + json.dumps({"text": "control \u0001\u0002\u0003\u0004 chars"}).encode() + b"\n"
    + json.dumps({"text": "둘째 문서"}, ensure_ascii=False).encode() + b"\n"
)
BAD_REASONS = {"non_string_text": 1, "invalid_utf8": 1, "malformed_json": 1, "null_text": 1,
               "missing_text_field": 1, "not_json_object": 1, "control_chars": 1}


def test_bad_jsonl_records_are_counted_by_prepares_reasons(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_bytes(BAD_JSONL)
    docs = read_documents(path)
    assert docs.texts == ["첫 문서입니다.", "둘째 문서"]
    assert docs.rejected == BAD_REASONS and docs.num_rejected == 7
    texts, rejected = docs  # a (texts, rejected) pair
    assert texts == docs.texts and rejected == docs.rejected
    assert describe_rejected({"null_text": 1, "invalid_utf8": 2}) == "invalid_utf8 2, null_text 1"


def test_same_rejects_as_prepares_validate_stage(tmp_path):
    """Every record the one reader skips, prepare's clean_records drops with the same reason."""
    path = tmp_path / "h.jsonl"
    path.write_bytes(BAD_JSONL)
    source = source_for(path, name="s", domain="ko")
    records = [r for task in read.plan_reads(source, [str(path)], 1 << 20) for r in read.read_task(task, source)]
    _, rejected, _ = clean_records(records, CleanConfig())
    prepare_reasons = Counter(r["reason"] for r in rejected)
    assert {k: prepare_reasons[k] for k in BAD_REASONS} == BAD_REASONS


def test_txt_cp949_needs_its_encoding(tmp_path):
    path = tmp_path / "h.txt"
    path.write_bytes("한국어 문장입니다.\n\n두 번째 줄\n".encode("cp949"))
    assert read_documents(path, encoding="cp949") == Documents(["한국어 문장입니다.", "두 번째 줄"], {})
    assert read_documents(path) == Documents([], {"invalid_utf8": 2})
    with pytest.raises(ConfigError, match="encoding"):
        read_documents(path, encoding="utf-16")


def test_nfd_text_reads_as_nfc(tmp_path):
    nfc = ["한국어 문장입니다.", "자모가 분리된 글"]
    path = tmp_path / "nfd.txt"
    path.write_text("\n".join(unicodedata.normalize("NFD", t) for t in nfc) + "\n", encoding="utf-8")
    assert path.read_text(encoding="utf-8") != "\n".join(nfc) + "\n"
    assert read_documents(path).texts == nfc


def test_csv_tsv_fields_gzip_and_directories(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.tsv").write_text("id\tsentence\n1\t첫째 문장\n2\t\n", encoding="utf-8")
    with gzip.open(tmp_path / "d" / "b.csv.gz", "wt", encoding="utf-8") as f:
        f.write('Q,A\n"질문, 쉼표",답\n')
    assert read_documents(tmp_path / "d" / "a.tsv", text_field="sentence") == Documents(["첫째 문장"], {"empty_text": 1})
    assert read_documents(tmp_path / "d" / "b.csv.gz", text_field="Q,A").texts == ["질문, 쉼표\n답"]
    with pytest.raises(UserError, match="no column 'text'"):
        read_documents(tmp_path / "d" / "a.tsv")


def test_max_docs_stops_early_and_counts_rejects_before_it(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_bytes(BAD_JSONL)
    assert read_documents(path, max_docs=1) == Documents(["첫 문서입니다."], {})
    assert read_documents(path, max_docs=2) == Documents(["첫 문서입니다.", "둘째 문서"], BAD_REASONS)
    txt = tmp_path / "h.txt"
    txt.write_bytes(b"a\n\xff\nb\nc\n")
    assert read_documents(txt, max_docs=2) == Documents(["a", "b"], {"invalid_utf8": 1})


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_documents(tmp_path / "nope.txt")
