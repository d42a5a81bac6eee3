"""Corpus sampling: raw formats through prepare's reader, prepare output dirs with the domain
filter, bounded and seeded sampling, rejects counted, bad paths as one-line UserErrors."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kopretrain.config.tokenizer import SampleConfig
from kopretrain.errors import UserError
from kopretrain.tokenizer.corpus import sample_corpus


def test_shipped_korean_sample_reads_every_format(repo_root):
    s = sample_corpus([str(repo_root / "data/ko")], SampleConfig())
    names = {p.rsplit("/", 1)[-1] for p in s.files}
    assert {"chatbot.csv", "korsts_train.tsv", "kornli_xnli_dev.tsv", "news_comments.txt", "nsmc_reviews.jsonl.gz",
            "constitution.txt"} <= names
    assert s.num_docs_seen == len(s.texts) > 40000 and s.skipped_files == [] and s.rejected == {}
    texts = set(s.texts)
    assert "12시 땡!\n하루가 또 가네요." in texts  # chatbot Q and A, joined
    assert "비행기가 이륙하고 있다.\n비행기가 이륙하고 있다." in texts  # KorSTS sentence1 and sentence2
    assert "전체관람가는 아닌것 같아요" in texts  # NSMC review


def test_sample_is_bounded_and_deterministic(repo_root):
    cfg = SampleConfig(num_sample_docs=500, max_doc_chars=40, seed=3)
    a = sample_corpus([str(repo_root / "data/ko")], cfg)
    b = sample_corpus([str(repo_root / "data/ko")], cfg)
    c = sample_corpus([str(repo_root / "data/ko")], SampleConfig(num_sample_docs=500, max_doc_chars=40, seed=4))
    assert a.texts == b.texts and a.texts != c.texts
    assert len(a.texts) == 500 and a.num_docs_seen > 40000 and max(map(len, a.texts)) <= 40


def test_prepare_output_dir_keeps_the_domain(tmp_path):
    (tmp_path / "clean").mkdir()
    table = pa.table({"id": ["1", "2", "3"], "text": ["한국어 문장", "English text", "또 다른 문장"],
                      "domain": ["ko", "en", "ko"], "source": ["a", "b", "a"]})
    pq.write_table(table, tmp_path / "clean" / "part-0.parquet")
    assert sorted(sample_corpus([str(tmp_path)], SampleConfig()).texts) == ["또 다른 문장", "한국어 문장"]
    assert sample_corpus([str(tmp_path)], SampleConfig(domain="en")).texts == ["English text"]


def test_directories_skip_unknown_files_and_count_rejects(tmp_path):
    (tmp_path / "README.md").write_text("# not a corpus file\n")
    (tmp_path / "notes.json").write_text('{"title": "no text field"}\n')
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"text": "좋은 문서"}) + "\n{broken json\n" + json.dumps({"text": "둘째"}) + "\n")
    s = sample_corpus([str(tmp_path)], SampleConfig())
    assert sorted(s.texts) == ["둘째", "좋은 문서"]
    assert s.rejected == {"malformed_json": 1}
    assert sorted(p.rsplit("/", 1)[-1] for p in s.skipped_files) == ["README.md", "notes.json"]


def test_bad_paths_are_user_errors(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(UserError, match="does not exist"):
        sample_corpus([str(tmp_path / "missing")], SampleConfig())
    with pytest.raises(UserError, match="unrecognised corpus file"):
        sample_corpus([str(tmp_path / "x.bin")], SampleConfig())
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(UserError, match="no text"):
        sample_corpus([str(tmp_path / "empty.txt")], SampleConfig())


def test_raw_files_go_through_the_one_reader(tmp_path):
    """Same reader as held-out files and prepare: validate's rejects by name, texts in NFC."""
    import unicodedata

    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": unicodedata.normalize("NFD", "한국어 문장")}) + "\n"
        + json.dumps({"text": 123}) + "\n" + json.dumps({"text": "bin\u0001\u0002\u0003\u0004ary"}) + "\n",
        encoding="utf-8")
    s = sample_corpus([str(tmp_path / "a.jsonl")], SampleConfig())
    assert s.texts == ["한국어 문장"]
    assert s.rejected == {"non_string_text": 1, "control_chars": 1}
