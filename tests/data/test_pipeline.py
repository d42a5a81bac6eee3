"""prepare on a real local Ray instance: a small corpus with every kind of bad input, exact and
near duplicates across files and formats, PII. Accounting adds up exactly against the files on
disk, the distributed dedup equals the in-memory reference, outputs are byte-identical across
runs and parallelism, a killed run resumes without redoing finished work, and a tokenizer-only
re-run reuses clean + dedup and never mixes tokens of two tokenizers."""

from __future__ import annotations

import csv
import gzip
import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from kopretrain.config.common import TrackingConfig
from kopretrain.config.data_stages import SourceConfig
from kopretrain.config.prepare import DedupConfig, PrepareConfig, TokenizeConfig
from kopretrain.data.command import run_prepare
from kopretrain.data.dedup import DedupParams, find_duplicates
from kopretrain.data.packed import PackedDataset
from kopretrain.data.pipeline import shuffle_waves
from kopretrain.data.read import list_files, plan_reads, read_task
from kopretrain.errors import UserError
from kopretrain.paths import DATA_DIR

pytestmark = pytest.mark.ray


def _korean_docs(n: int) -> list[str]:
    """Distinct Korean documents (two unrelated KorSTS sentences each) that the default cleaning
    keeps unchanged, so that planted duplicates are the only reason for them to go."""
    from kopretrain.config.data_stages import CleanConfig
    from kopretrain.data.clean import clean_records

    rows = [line.split("\t") for line in (DATA_DIR / "ko" / "korsts_train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    candidates = list(dict.fromkeys(f"{a[5]} {b[6]}" for a, b in zip(rows[::7], rows[3::7]) if len(a[5]) + len(b[6]) >= 60))
    records = [{"id": str(i), "source": "s", "domain": "ko", "text": t, "reason": None, "raw": None} for i, t in enumerate(candidates)]
    kept = [r["text"] for r in clean_records(records, CleanConfig())[0] if r["text"] == candidates[int(r["id"])]]
    assert len(kept) >= n
    return kept[:n]


def _edit(text: str) -> str:
    """One character changed in a long text: a near duplicate (Jaccard > 0.9)."""
    i = len(text) // 2
    return text[:i] + ("가" if text[i] != "가" else "나") + text[i + 1 :]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Files of every format and every bad-input kind; returns the sources and what was planted."""
    root = tmp_path_factory.mktemp("corpus")
    ko = _korean_docs(70)
    en = [line for line in (DATA_DIR / "en" / "botchan.txt").read_text(encoding="utf-8").splitlines() if len(line) > 60][:40]
    lines = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in ko[:40]]
    bad = [b'{"text": "broken json', b"[1, 2, 3]", b'{"body": "no text field"}', b'{"text": null}', b'{"text": 5}',
           b'{"text": "   "}', b'{"text": "' + "가".encode() * 2000 + b'"}', b'{"text": "\xff\xfe invalid utf-8"}']
    (root / "ko").mkdir()
    (root / "ko" / "web.jsonl").write_bytes(b"\n".join(lines[:20] + bad + lines[20:]) + b"\n")
    # gzip txt: exact duplicates (whitespace variants), near duplicates, PII, filter rejects
    more = [ko[40], "  " + ko[0].replace(" ", "   ") + " ", ko[1], _edit(ko[2]), _edit(ko[41]), ko[41],
            f"{ko[42]} 연락은 hong.gildong@example.com 으로 주세요", "ㅋ" * 40, "짧음", "!!!! ???? #### $$$$ %%%% ^^^^ &&&&"]
    (root / "ko" / "more.txt.gz").write_bytes(gzip.compress(("\n".join(more) + "\n").encode()))
    # a truncated gzip: the complete lines before the cut are kept, the cut is one reject
    full = gzip.compress(("\n".join(ko[43:50]) + "\n").encode())
    (root / "ko" / "cut.txt.gz").write_bytes(full[: len(full) * 2 // 3])
    pq.write_table(pa.table({"text": ko[50:60] + [ko[3]], "n": list(range(11))}), root / "ko" / "table.parquet")
    with open(root / "ko" / "reviews.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("id", "review"), *enumerate(ko[60:70])])
    (root / "en").mkdir()
    en_lines = en + [en[0], _edit(en[1] + " " + en[2])]
    (root / "en" / "books.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        ("\n".join(json.dumps({"text": t}) for t in en_lines) + "\n").encode()))
    sources = [
        SourceConfig(name="web", path=str(root / "ko" / "web.jsonl"), domain="ko", max_record_bytes=2048),
        SourceConfig(name="more", path=str(root / "ko" / "*.txt.gz"), domain="ko"),
        SourceConfig(name="table", path=str(root / "ko" / "table.parquet"), domain="ko"),
        SourceConfig(name="reviews", path=str(root / "ko" / "reviews.csv"), domain="ko", text_field="review"),
        SourceConfig(name="books", path=str(root / "en"), domain="en"),
    ]
    num_in = sum(1 for s in sources for t in plan_reads(s, list_files(s), 1 << 30) for _ in read_task(t, s))
    return {"sources": sources, "num_in": num_in, "ko": ko, "en": en}


def _cfg(corpus, out: Path, **kw) -> PrepareConfig:
    return PrepareConfig(sources=corpus["sources"], output_dir=str(out), tracking=TrackingConfig(enabled=False),
                         read_chunk_bytes=2048, **kw)


def _table(directory: Path) -> pa.Table | None:
    files = sorted(directory.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def _snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d.parent)): p.read_bytes() for d in dirs if d.exists() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(ray_local, corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ref")
    return out, run_prepare(_cfg(corpus, out, keep_intermediate=True), out)


def test_accounting_adds_up_against_the_files_on_disk(reference, corpus):
    out, report = reference
    clean, rejected, dups = _table(out / "clean"), _table(out / "rejected"), _table(out / "duplicates")
    t = report["totals"]
    assert t["docs_in"] == corpus["num_in"]
    assert t["docs_out"] == clean.num_rows
    assert t["rejected"] == dict(Counter(rejected.column("reason").to_pylist()))
    kinds = Counter(dups.column("kind").to_pylist())
    assert (t["exact_dups"], t["near_dups"]) == (kinds["exact"], kinds["near"])
    assert t["docs_in"] == t["docs_out"] + sum(t["rejected"].values()) + t["exact_dups"] + t["near_dups"]
    for d, row in report["domains"].items():
        assert row["docs_in"] == row["docs_out"] + sum(row["rejected"].values()) + row["exact_dups"] + row["near_dups"]
        texts = [x for x, dom in zip(clean.column("text").to_pylist(), clean.column("domain").to_pylist()) if dom == d]
        assert row["chars_out"] == sum(map(len, texts)) and row["bytes_out"] == sum(len(x.encode()) for x in texts)
    # every planted bad-input kind was rejected with its reason, and the rest of each file still read
    for reason in ("malformed_json", "not_json_object", "missing_text_field", "null_text", "non_string_text",
                   "empty_text", "too_long", "invalid_utf8", "truncated_stream", "char_repetition"):
        assert t["rejected"].get(reason, 0) >= 1, reason
    ids = set(clean.column("id").to_pylist())
    assert sum(i.startswith("web/") for i in ids) == 40  # originals come first: their later copies go
    assert not any("hong.gildong@example.com" in x for x in clean.column("text").to_pylist())
    assert t["counters"].get("pii_email") == 1


def test_planted_duplicates_are_removed_and_originals_kept(reference, corpus):
    out, _ = reference
    clean, dups = _table(out / "clean"), _table(out / "duplicates")
    kept = set(clean.column("text").to_pylist())
    ko = corpus["ko"]
    assert {ko[0], ko[1], ko[2], ko[3]} <= kept
    assert _edit(ko[41]) in kept and ko[41] not in kept  # the edited copy came first in more.txt.gz
    kind = dict(zip(dups.column("id").to_pylist(), dups.column("kind").to_pylist()))
    by_source = Counter((i.split("/")[0], k) for i, k in kind.items())
    assert by_source[("more", "exact")] >= 2  # whitespace variant of ko[0], copy of ko[1]
    assert by_source[("more", "near")] >= 2  # edits of ko[2] and ko[41]
    assert by_source[("table", "exact")] == 1  # ko[3] again, in a parquet file
    assert by_source[("books", "exact")] == 1 and by_source[("books", "near")] == 0


def test_distributed_dedup_equals_the_in_memory_reference(reference):
    out, _ = reference
    stage = pa.concat_tables([pq.read_table(f, columns=["doc_key", "id", "text"])
                              for f in sorted((out / "_stage" / "clean").glob("part-*.parquet"))]).sort_by("doc_key")
    ids, texts = stage.column("id").to_pylist(), stage.column("text").to_pylist()
    expected = find_duplicates(texts, DedupParams())
    dups = _table(out / "duplicates")
    got = dict(zip(dups.column("id").to_pylist(), dups.column("kind").to_pylist()))
    assert got == {**{ids[i]: "exact" for i in expected.exact}, **{ids[i]: "near" for i in expected.near}}


def test_outputs_are_byte_identical_across_runs_and_parallelism(ray_local, reference, corpus, tmp_path):
    ref_out, ref_report = reference
    out = tmp_path / "again"
    # other parallelism, partitions and waves (several near-dedup shuffles of disjoint key ranges)
    dedup = DedupConfig(num_shuffle_partitions=3, shuffle_wave_bytes=1536)
    report = run_prepare(_cfg(corpus, out, num_parallel_tasks=1, dedup=dedup), out)
    num_docs = report["totals"]["docs_out"] + report["totals"]["exact_dups"] + report["totals"]["near_dups"]
    assert shuffle_waves(num_docs, 1, 1536) >= 2 and shuffle_waves(num_docs * 9, 1, 1536) >= 6
    names = ("clean", "rejected", "duplicates")
    assert _snapshot(*(out / n for n in names)) == _snapshot(*(ref_out / n for n in names))
    assert {k: report[k] for k in ("totals", "domains", "sources")} == {k: ref_report[k] for k in ("totals", "domains", "sources")}
    again = run_prepare(_cfg(corpus, out), out)  # idempotent: nothing to redo, same report
    assert again["clean_reused"] and again["totals"] == report["totals"]


def test_killed_run_resumes_without_redoing_finished_work(ray_local, reference, corpus, tmp_path, capsys):
    """What a kill leaves behind: jobs with their marker are done, a job without one may have left
    a temporary file. Reproduce that state from a finished run and resume it."""
    ref_out, _ = reference
    out = tmp_path / "killed"
    run_prepare(_cfg(corpus, out, keep_intermediate=True), out)
    stage = out / "_stage" / "clean"
    markers = sorted(stage.glob("part-*.json"))
    assert len(markers) >= 6
    # killed during stage 1: the last two read tasks never finished, one left a .tmp behind
    for m in markers[-2:]:
        m.unlink()
        m.with_suffix(".parquet").rename(m.with_suffix(".parquet.tmp"))
    finished = {m: m.stat().st_mtime_ns for m in markers[:-2]}
    for p in ("clean_done.json", "dedup.npz"):
        (out / "_stage" / p).unlink()
    for p in list((out / "_stage" / "final").glob("*.json")) + list((out / "clean").glob("*")):
        p.unlink()
    capsys.readouterr()
    report = run_prepare(_cfg(corpus, out, keep_intermediate=True), out)
    log = capsys.readouterr().out
    assert f"clean: 2 of {len(markers)} read tasks to run ({len(markers) - 2} done earlier)" in log
    assert {m: m.stat().st_mtime_ns for m in finished} == finished  # not rewritten
    assert not list(stage.glob("*.tmp"))
    names = ("clean", "rejected", "duplicates")
    assert _snapshot(*(out / n for n in names)) == _snapshot(*(ref_out / n for n in names))
    assert not report["clean_reused"]
    # killed between dedup and writing: dedup is not redone, only the missing parts are written
    run_prepare(_cfg(corpus, out / "b", keep_intermediate=True), out / "b")
    (out / "b" / "_stage" / "clean_done.json").unlink()
    lost = sorted((out / "b" / "_stage" / "final").glob("*.json"))[:3]
    for m in lost:
        m.unlink()
    capsys.readouterr()
    run_prepare(_cfg(corpus, out / "b"), out / "b")
    log = capsys.readouterr().out
    assert f"write clean/: 3 of {len(markers)} parts to write" in log
    assert _snapshot(*(out / "b" / n for n in names)) == _snapshot(*(ref_out / n for n in names))


def test_tokenizer_rerun_reuses_clean_and_never_mixes_tokenizers(ray_local, corpus, tmp_path, capsys):
    from tests.helpers import make_tiny_bpe_tokenizer

    out = tmp_path / "tok"
    capsys.readouterr()
    run_prepare(_cfg(corpus, out), out)
    log = capsys.readouterr().out
    assert "prepare: [1/4] clean:" in log and "prepare: [4/4] tokens: skipped (tokenizer.path not set)" in log
    texts = _table(out / "clean").column("text").to_pylist()
    make_tiny_bpe_tokenizer(texts, vocab_size=300).save_pretrained(tmp_path / "tok_a")
    make_tiny_bpe_tokenizer(texts, vocab_size=500).save_pretrained(tmp_path / "tok_b")
    tokens = tmp_path / "tokens"
    capsys.readouterr()
    a = run_prepare(_cfg(corpus, out, tokenizer=TokenizeConfig(path=str(tmp_path / "tok_a")), tokens_dir=str(tokens), seq_len=32), out)
    log = capsys.readouterr().out
    assert a["clean_reused"] and "read tasks to run" not in log
    assert "prepare: [4/4] tokens: encoding" in log and "/3]" not in log  # one stage count throughout
    for d in ("ko", "en"):
        ds = PackedDataset(tokens / d)
        assert a["tokens"][d]["num_docs"] == a["domains"][d]["docs_out"] and len(ds) == a["tokens"][d]["num_sequences"] > 0
    fp_a = json.loads((tokens / "manifest.json").read_text())["fingerprint"]
    b = run_prepare(_cfg(corpus, out, tokenizer=TokenizeConfig(path=str(tmp_path / "tok_b")), tokens_dir=str(tokens), seq_len=32), out)
    manifest = json.loads((tokens / "manifest.json").read_text())
    assert manifest["fingerprint"] != fp_a
    for d in ("ko", "en"):
        index = json.loads((tokens / d / "index.json").read_text())
        assert index["tokenizer_fingerprint"] == b["tokens"][d]["tokenizer_fingerprint"] != a["tokens"][d]["tokenizer_fingerprint"]
        assert len(list((tokens / d).glob("shard-*.bin"))) == len(index["shards"])  # no shard of tok_a left


def test_bad_source_path_fails_fast_with_one_line(tmp_path):
    cfg = PrepareConfig(sources=[SourceConfig(name="x", path=str(tmp_path / "nope.jsonl"), domain="ko")],
                        output_dir=str(tmp_path / "o"), tracking=TrackingConfig(enabled=False))
    with pytest.raises(UserError) as e:
        run_prepare(cfg, tmp_path)
    assert "nope.jsonl" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()


def test_shuffle_memory_is_bounded_by_the_task_count_not_the_corpus(ray_local, reference):
    """Ray Data runs at most num_parallel dedup tasks (on a local instance with 8 logical CPUs,
    otherwise one shuffle worker per logical CPU is started and then kept idle); partitions
    and waves hold bounded key bytes at any size; the process-wide DataContext stays untouched."""
    import ray

    from kopretrain.data.pipeline import KEY_BYTES, _wave_dataset, shuffle_partitions

    out, _ = reference
    files = [str(p) for p in sorted((out / "_stage" / "clean").glob("part-*.parquet"))]
    ds = _wave_dataset(files, ["hash"], 2)(0, 1)
    assert ds.context.execution_options.resource_limits.cpu == 2
    assert ds.context.shuffle_input_batch_bytes == 16 << 20
    assert ray.data.DataContext.get_current().execution_options.resource_limits.cpu == float("inf")
    for num_docs in (216_979, 2_155_792, 130_000_000):  # 100 MB, 1 GB, 61 GB
        num_rows = num_docs * 9
        waves = shuffle_waves(num_rows, 2)
        assert num_rows * KEY_BYTES / waves <= 128 << 20
        assert num_rows * KEY_BYTES / waves / shuffle_partitions(-(-num_rows // waves), 2) <= 16 << 20
    assert shuffle_waves(130_000_000 * 9, 256) < shuffle_waves(130_000_000 * 9, 2)  # a cluster: fewer, bigger waves


def test_read_chunks_depend_on_the_input_size_only():
    from kopretrain.data.command import read_chunk_bytes

    assert read_chunk_bytes(64 << 20, 20_000_000) == 1 << 20  # small corpus: 1 MiB tasks
    assert read_chunk_bytes(64 << 20, 1_000_000_000) == 1_000_000_000 // 64  # ~64 tasks
    assert read_chunk_bytes(64 << 20, 61_000_000_000) == 64 << 20  # never above the configured limit
    assert read_chunk_bytes(2048, 10_000) == 2048
