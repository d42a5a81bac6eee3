"""Read stage: every format, file/dir/glob sources, line-aligned splitting, and every kind of bad
input becoming a rejected record (with the rest of the file still read)."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from kopretrain.config.data_stages import SourceConfig
from kopretrain.data.read import file_kind, list_files, plan_reads, read_task
from kopretrain.errors import ConfigError, UserError

KO = ["안녕하세요, 오늘은 날씨가 좋네요.", "이 영화 정말 재미있어요!", "한국어 문장 세 번째입니다."]


def read_all(source: SourceConfig, chunk_bytes: int = 1 << 30) -> list[dict]:
    return [r for t in plan_reads(source, list_files(source), chunk_bytes) for r in read_task(t, source)]


def good(records):
    return [r["text"] for r in records if r["reason"] is None]


def reasons(records):
    return [r["reason"] for r in records if r["reason"] is not None]


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def src(path, fmt="auto", **kw) -> SourceConfig:
    return SourceConfig(name="s", path=str(path), domain="ko", format=fmt, **kw)


# ---------------------------------------------------------------- formats

def test_jsonl_plain_gzip_and_zstd_read_the_same(tmp_path):
    data = jsonl_bytes([{"text": t, "n": i} for i, t in enumerate(KO)])
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    (tmp_path / "d.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.zst"):
        records = read_all(src(tmp_path / name))
        assert good(records) == KO, name
        assert records[0]["id"] == f"s/{name}@0" and records[0]["source"] == "s" and records[0]["domain"] == "ko"
        assert records[1]["id"] == f"s/{name}@{len(data.splitlines(True)[0])}"  # byte offset of the line


def test_zstd_concatenated_frames(tmp_path):
    c = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(c.compress(jsonl_bytes([{"text": KO[0]}])) + c.compress(jsonl_bytes([{"text": KO[1]}])))
    assert good(read_all(src(tmp_path / "a.jsonl.zst"))) == KO[:2]


def test_txt_lines_and_txt_file(tmp_path):
    (tmp_path / "a.txt").write_text("\ufeff" + KO[0] + "\r\n\n" + KO[1] + "\n   \n" + KO[2], encoding="utf-8")
    records = read_all(src(tmp_path / "a.txt"))
    assert good(records) == KO  # BOM and CRLF stripped, blank lines are separators, no final newline is fine
    assert len(records) == 3
    whole = read_all(src(tmp_path / "a.txt", fmt="txt_file"))
    assert len(whole) == 1 and whole[0]["id"] == "s/a.txt" and whole[0]["text"].startswith(KO[0])


def test_csv_quoted_multiline_and_multiple_text_fields(tmp_path):
    (tmp_path / "qa.csv").write_text(
        'Q,A,label\n12시 땡!,하루가 또 가네요.,0\n"여러 줄\n질문, 쉼표도",\"대답 \"\"인용\"\"\",1\n,빈 질문,0\n', encoding="utf-8")
    records = read_all(src(tmp_path / "qa.csv", text_field="Q,A"))
    assert good(records) == ["12시 땡!\n하루가 또 가네요.", '여러 줄\n질문, 쉼표도\n대답 "인용"', "빈 질문"]
    single = read_all(src(tmp_path / "qa.csv", text_field="A"))
    assert good(single) == ["하루가 또 가네요.", '대답 "인용"', "빈 질문"]


def test_tsv_without_quoting_keeps_bare_quotes(tmp_path):
    # KorNLI-style: a bare `"` inside a field must not start a quoted field.
    (tmp_path / "nli.tsv").write_text('sentence1\tsentence2\tgold\n그가 말했다, "엄마, 저 왔어요."\t그는 말했다.\tneutral\n', encoding="utf-8")
    assert good(read_all(src(tmp_path / "nli.tsv", text_field="sentence1"))) == ['그가 말했다, "엄마, 저 왔어요."']


def test_parquet_one_task_per_row_group(tmp_path):
    table = pa.table({"text": KO * 4, "other": list(range(12))})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=5)
    source = src(tmp_path / "a.parquet")
    tasks = plan_reads(source, list_files(source), 1 << 20)
    assert [t["row_group"] for t in tasks] == [0, 1, 2]
    records = [r for t in tasks for r in read_task(t, source)]
    assert good(records) == KO * 4
    assert [r["id"] for r in records][:6] == [f"s/a.parquet#{i}" for i in range(6)]


def test_parquet_bad_values_and_corrupt_file(tmp_path):
    pq.write_table(pa.table({"text": ["좋은 문장입니다", None, "", "또 좋은 문장"]}), tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    records = read_all(src(tmp_path))
    assert good(records) == ["좋은 문장입니다", "또 좋은 문장"]
    assert reasons(records) == ["null_text", "empty_text", "corrupt_parquet"]


def test_missing_column_is_a_user_error(tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "a.parquet")
    (tmp_path / "a.csv").write_text("Q,A\n1,2\n", encoding="utf-8")
    with pytest.raises(UserError, match="no column 'text'"):
        plan_reads(src(tmp_path / "a.parquet"), [str(tmp_path / "a.parquet")], 1 << 20)
    with pytest.raises(UserError, match="no column 'text'.*Q"):
        plan_reads(src(tmp_path / "a.csv"), [str(tmp_path / "a.csv")], 1 << 20)


def test_file_kind_by_extension():
    assert file_kind("x/a.jsonl.gz", "auto") == ("jsonl", "gzip")
    assert file_kind("a.JSON", "auto") == ("jsonl", None)
    assert file_kind("a.txt.zst", "auto") == ("txt", "zstd")
    assert file_kind("a.tsv", "auto") == ("tsv", None)
    assert file_kind("a.bin", "auto") == (None, None)
    assert file_kind("a.bin", "txt") == ("txt", None)


# ---------------------------------------------------------------- sources: file, dir, glob

def test_directory_glob_and_hidden_files(tmp_path):
    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "b.txt").write_text(KO[1], encoding="utf-8")
    (tmp_path / "sub" / "deep" / "a.txt").write_text(KO[0], encoding="utf-8")
    (tmp_path / ".hidden" / "x.txt").write_text("숨김", encoding="utf-8")
    (tmp_path / "_SUCCESS").write_text("", encoding="utf-8")
    (tmp_path / "notes.md").write_text("readme", encoding="utf-8")
    files = list_files(src(tmp_path))
    assert files == sorted([str(tmp_path / "b.txt"), str(tmp_path / "notes.md"), str(tmp_path / "sub/deep/a.txt")])
    records = read_all(src(tmp_path))
    assert [r["id"] for r in records] == ["s/b.txt@0", "s/notes.md", "s/sub/deep/a.txt@0"]
    assert records[1]["reason"] == "unsupported_format"  # never skipped silently
    globbed = read_all(src(tmp_path / "**" / "*.txt"))
    assert [r["id"] for r in globbed] == ["s/b.txt@0", "s/sub/deep/a.txt@0"]


def test_nothing_matches_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="source 's'.*does not exist"):
        list_files(src(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="no files match"):
        list_files(src(tmp_path / "*.jsonl"))


def test_source_config_validation():
    with pytest.raises(ConfigError, match="format"):
        SourceConfig(name="s", path="x", domain="ko", format="xml")
    with pytest.raises(ConfigError, match="domain"):
        SourceConfig(name="s", path="x", domain="")
    with pytest.raises(ConfigError, match="encoding"):
        SourceConfig(name="s", path="x", domain="ko", encoding="utf-16")


# ---------------------------------------------------------------- splitting big files

@pytest.mark.parametrize("name,fmt,field", [("a.jsonl", "auto", "text"), ("a.txt", "auto", "text"), ("a.tsv", "auto", "t")])
def test_split_reads_equal_whole_file_read(tmp_path, name, fmt, field):
    lines = [f"{KO[i % 3]} {i} " + "가" * (i % 37) for i in range(500)]
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_bytes(jsonl_bytes([{"text": t} for t in lines]))
    elif name.endswith(".tsv"):
        path.write_text("id\tt\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(lines)), encoding="utf-8")
    else:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = src(path, fmt, text_field=field)
    whole = read_all(source)
    tasks = plan_reads(source, list_files(source), 997)  # an odd size: boundaries fall mid-line
    assert len(tasks) > 10
    for a, b in zip(tasks, tasks[1:]):
        assert a["end"] == b["start"]
        with open(path, "rb") as f:  # every range starts at a line start
            f.seek(b["start"] - 1)
            assert f.read(1) == b"\n"
    split = [r for t in tasks for r in read_task(t, source)]
    assert split == whole and good(whole) == lines
    assert len({r["id"] for r in split}) == len(lines)


def test_compressed_and_quoted_csv_are_one_task(tmp_path):
    data = jsonl_bytes([{"text": t} for t in KO * 200])
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "b.csv").write_text("text\n" + "\n".join(KO * 200) + "\n", encoding="utf-8")
    assert len(plan_reads(src(tmp_path), list_files(src(tmp_path)), 256)) == 2


# ---------------------------------------------------------------- bad input

def test_every_bad_jsonl_line_is_rejected_and_the_rest_read(tmp_path):
    lines = [
        json.dumps({"text": KO[0]}, ensure_ascii=False).encode(),
        b'{"text": "\xff\xfe broken utf-8"}',
        b'{"text": "unterminated',
        b'["a", "list"]',
        b'{"body": "no text field"}',
        b'{"text": null}',
        b'{"text": 42}',
        b'{"text": "   "}',
        b'{"text": "\\ud800 lone surrogate"}',
        b'[' * 100_000,
        json.dumps({"text": "NUL\x00 and \x07 control chars are kept for validate"}).encode(),
        json.dumps({"text": KO[1]}, ensure_ascii=False).encode(),
    ]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    records = read_all(src(tmp_path / "bad.jsonl"))
    assert reasons(records) == ["invalid_utf8", "malformed_json", "not_json_object", "missing_text_field", "null_text",
                                "non_string_text", "empty_text", "invalid_unicode", "malformed_json"]
    assert good(records) == [KO[0], "NUL\x00 and \x07 control chars are kept for validate", KO[1]]
    bad = [r for r in records if r["reason"]]
    assert "\ufffd" in bad[0]["raw"] and "broken utf-8" in bad[0]["raw"]  # raw kept, decoded with replacement
    assert bad[1]["raw"].startswith('{"text": "unterminated')
    assert all(r["text"] is None for r in bad)


def test_truncated_gzip_keeps_records_before_the_cut(tmp_path):
    data = jsonl_bytes([{"text": f"{KO[i % 3]} {i}"} for i in range(5000)])
    blob = gzip.compress(data)
    (tmp_path / "a.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    records = read_all(src(tmp_path / "a.jsonl.gz"))
    assert reasons(records) == ["truncated_stream"]
    texts = good(records)
    assert 1000 < len(texts) < 5000 and texts == [f"{KO[i % 3]} {i}" for i in range(len(texts))]


def test_truncated_zstd_is_detected(tmp_path):
    data = jsonl_bytes([{"text": f"{KO[i % 3]} {i}"} for i in range(20000)])
    blob = zstandard.ZstdCompressor().compress(data)
    (tmp_path / "a.jsonl.zst").write_bytes(blob[: len(blob) // 2])
    records = read_all(src(tmp_path / "a.jsonl.zst"))
    assert reasons(records) == ["truncated_stream"]
    texts = good(records)
    assert 1000 < len(texts) < 20000 and texts == [f"{KO[i % 3]} {i}" for i in range(len(texts))]


def test_corrupt_gzip_is_one_reject(tmp_path):
    (tmp_path / "a.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-garbage-garbage")
    records = read_all(src(tmp_path / "a.jsonl.gz"))
    assert reasons(records) == ["corrupt_stream"] and not good(records)


def test_ten_megabyte_line_is_rejected_without_holding_it(tmp_path):
    big = b'{"text": "' + b"a" * 10_000_000 + b'"}'
    (tmp_path / "a.jsonl").write_bytes(jsonl_bytes([{"text": KO[0]}]) + big + b"\n" + jsonl_bytes([{"text": KO[1]}]))
    source = src(tmp_path / "a.jsonl", max_record_bytes=1_000_000)
    tracemalloc.start()
    records = read_all(source)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert good(records) == KO[:2] and reasons(records) == ["too_long"]
    bad = [r for r in records if r["reason"]][0]
    assert len(bad["raw"]) < 70_000 and "10000013 bytes" in bad["raw"]  # bounded raw, original size noted
    assert peak < 3_000_000  # the 10 MB line was never in memory at once (~2 MB: the 1 MB limit + buffers)


def test_long_txt_file_and_bad_csv_row(tmp_path):
    (tmp_path / "big.txt").write_bytes("가".encode() * 700_000)
    records = read_all(src(tmp_path / "big.txt", fmt="txt_file", max_record_bytes=1_000_000))
    assert reasons(records) == ["too_long"]
    (tmp_path / "a.tsv").write_bytes("a\ttext\n1\t좋은 문장\n2\t너무\t많은 칸\n".encode() + b"3\t\xff\xfe\n" + "4\t끝\n".encode())
    records = read_all(src(tmp_path / "a.tsv"))
    assert reasons(records) == ["bad_csv_row", "invalid_utf8"] and good(records) == ["좋은 문장", "끝"]


def test_unclosed_csv_quote_rejects_its_line_and_recovers_the_rest(tmp_path):
    (tmp_path / "a.csv").write_text('text\n좋은 문장\n"열린 따옴표\n끝까지\n', encoding="utf-8")
    records = read_all(src(tmp_path / "a.csv"))
    assert good(records) == ["좋은 문장", "끝까지"] and reasons(records) == ["bad_csv_row"]
    assert [r["id"] for r in records if r["reason"]] == ["s/a.csv@19"]  # byte offset of the open-quote line


def test_stray_quote_in_the_middle_of_a_csv_loses_no_later_row(tmp_path):
    (tmp_path / "r.csv").write_text('id,review\n0,"a "b" c\nd" e"\n1,"정상 문장입니다"\n2,"x"\n', encoding="utf-8")
    records = read_all(src(tmp_path / "r.csv", text_field="review"))
    assert good(records) == ["정상 문장입니다", "x"]
    assert reasons(records) == ["bad_csv_row", "bad_csv_row"]  # the open-quote line, then the orphan line


def test_relative_paths_resolve_from_the_project_root(tmp_path, monkeypatch, repo_root):
    monkeypatch.chdir(tmp_path)  # launched elsewhere: the shipped data/ is found under the project root
    law = SourceConfig(name="law", path="data/ko/law", domain="ko", format="txt_file")
    assert len(list_files(law)) == 11 and all(f.startswith(str(repo_root)) for f in list_files(law))
    globbed = SourceConfig(name="law", path="data/ko/law/bill_*.txt", domain="ko", format="txt_file")
    records = read_all(globbed)
    assert len(records) == 10 and records[0]["id"] == "law/bill_1809890.txt"
