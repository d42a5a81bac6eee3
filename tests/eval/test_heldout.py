"""Held-out files are read with prepare's reader: bad records are skipped by reason and told in
one line, a missing or unreadable file is a one-line UserError."""

from __future__ import annotations

import pytest

from kopretrain.errors import UserError
from kopretrain.eval.heldout import read_heldout, read_heldout_documents, skipped_line


def test_shipped_heldout_files_read_whole(repo_root):
    ko = read_heldout_documents("ko", repo_root / "data/heldout/ko.txt")
    en = read_heldout_documents("en", "data/heldout/en.txt")  # relative: from the project root
    assert (len(ko.texts), ko.rejected, len(en.texts), en.rejected) == (1500, {}, 577, {})
    lines = (repo_root / "data/heldout/en.txt").read_text(encoding="utf-8").splitlines()
    assert en.texts == [line for line in lines if line.strip()]  # the text as written, spaces kept
    assert skipped_line("en", "x", en) == ""


def test_bad_records_are_skipped_and_told_in_one_line(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    path.write_bytes(b'{"text": "good one"}\n{"text": 123}\n{"text": null}\n{bad json\n{"text": "\xff"}\n{"text": "two"}\n')
    docs = read_heldout_documents("ko", path)
    assert docs.texts == ["good one", "two"]
    assert docs.rejected == {"invalid_utf8": 1, "malformed_json": 1, "non_string_text": 1, "null_text": 1}
    assert skipped_line("ko", path, docs) == (f"heldout.ko: skipped 4 of 6 records in {path} "
                                              "(invalid_utf8 1, malformed_json 1, non_string_text 1, null_text 1)")
    assert read_heldout(path, domain="ko") == ["good one", "two"]
    assert capsys.readouterr().err.splitlines() == [skipped_line("ko", path, docs)]


def test_missing_and_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"^heldout\.ko: file not found: .*nope\.txt$"):
        read_heldout_documents("ko", tmp_path / "nope.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 1}\n{"text": null}\n\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"^heldout\.en: no readable documents in .*bad\.jsonl "
                                        r"\(2 records skipped: non_string_text 1, null_text 1\)$"):
        read_heldout_documents("en", bad)
    with pytest.raises(UserError, match="heldout.en: text_field"):
        read_heldout_documents("en", bad, text_field=" ")


def test_a_file_without_the_text_column_names_the_key(tmp_path):
    """kopretrain eval passes its key: the error starts with `heldout_text_field`, names the file and its columns."""
    path = tmp_path / "ko.tsv"
    path.write_text("id\tsentence\n1\t안녕하세요\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^heldout_text_field: source 'heldout\.ko': {path}: no column 'nope'; "
                                        r"columns: \['id', 'sentence'\]$"):
        read_heldout_documents("ko", path, text_field="nope", text_field_key="heldout_text_field")
    assert read_heldout_documents("ko", path, text_field="sentence", text_field_key="heldout_text_field").texts == ["안녕하세요"]
