"""End-to-end throughput and peak memory of `kopretrain prepare`, side by side with datatrove
doing the equivalent steps on the same generated input and the same number of cores.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/prepare_throughput.py --size-mb 100 1000 [--cores 2] [--work /tmp/prepare-bench]

For each size: `bench/make_corpus.py` writes the corpus (80% Korean, 20% English JSON lines with
planted duplicates, PII and junk), then, one after the other on the same files:

- kopretrain: `kopretrain prepare` (a subprocess: a fresh local Ray instance, its start included)
  reading both domains, cleaning (validate, normalize, filters, PII), exact + MinHash LSH dedup
  (char 5-grams, 9 bands x 13 rows), writing clean/ parquet and tokenizing + packing with the
  Polyglot-Ko tokenizer.json from ../shared (seq_len 2048).
- datatrove 0.10 (LocalPipelineExecutor, `--cores` workers): JsonlReader -> GopherRepetition ->
  GopherQuality (relaxed as in bench/clean_throughput.py so it keeps about what kopretrain keeps)
  -> PIIFormatter -> JsonlWriter -> MinhashDedupSignature (the same char 5-grams via a character
  word tokenizer, 9 buckets x 13 hashes) ; MinhashDedupBuckets ; MinhashDedupCluster ; JsonlReader
  -> MinhashDedupFilter -> ParquetWriter -> DocumentTokenizer (same tokenizer.json, EOS appended).
  Its MinHash also removes exact duplicates (identical shingles), so it needs no separate stage.

The corpus for the side-by-side run has no invalid-UTF-8 lines: datatrove's JsonlReader stops
decoding a file at the first one (it logs a warning and skips the rest of the file, including
the lines of the block before it), which would let it skip most of the work. `--utf8-check`
shows that behaviour on its own.

Memory: the summed PSS of the whole process tree (driver, Ray's GCS/raylet/workers, or datatrove's
worker pool), sampled every second; the peak is reported, and for kopretrain the sample with the
most memory in each stage, broken down by process kind (count x MiB: which workers, which pool).
Tokenizers run single-threaded in both (TOKENIZERS_PARALLELISM=false, RAYON_NUM_THREADS=1) so that
`--cores` bounds both. Corpora and outputs are deleted after each size. Prints markdown for
bench/prepare.md. Memory runs without datatrove, reusing the corpora between runs:

    .venv/bin/python bench/prepare_throughput.py --size-mb 100 1000 --no-datatrove --keep-corpus [--object-store]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT.parent / "shared" / "tokenizers" / "polyglot-ko" / "tokenizer.json"
ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _kind(p: psutil.Process) -> str:
    """What a process is, for the memory timeline: a Ray worker by the task it runs (and the
    dedicated worker pool Ray Data gives shuffle map/reduce tasks), else its program name."""
    cmd = p.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        try:
            env = p.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            env = {}
        pool = "shuffle-map " if env.get("RAY_DATA_SHUFFLE_MAP_WORKER") else "shuffle-reduce " if env.get("RAY_DATA_SHUFFLE_REDUCE_WORKER") else ""
        return (pool + cmd[0].split("(")[0]).strip()[:48]
    if any("kopretrain" in c for c in cmd[:3]):
        return "driver"
    return " ".join(Path(c).name for c in cmd[:1] if c)[:48] or "?"


def _stage(log: Path) -> str:
    """The last stage line `kopretrain prepare` printed so far ("[2/3] dedup", ...)."""
    lines = [l for l in log.read_text(errors="replace").splitlines() if l.startswith("prepare: [")] if log.exists() else []
    return lines[-1][len("prepare: "):].split(":")[0] if lines else "start"


STORE_BREAKDOWN = False  # --object-store: also split out object-store pages (parses smaps: costs CPU)


def _pss(p: psutil.Process) -> tuple[int, int]:
    """(PSS, the part of it that is pages of Ray's object store, /dev/shm/plasma*) of a process."""
    store = sum(m.pss for m in p.memory_maps(grouped=True) if "plasma" in m.path) if STORE_BREAKDOWN else 0
    return p.memory_full_info().pss, store


def measure(cmd: list[str], log: Path) -> dict:
    """Run `cmd`, sampling the PSS of its process tree every second: wall seconds, peak bytes, and a
    timeline (seconds, stage, total MiB, {process kind: [count, MiB, of which object store MiB]})."""
    env = {**os.environ, **ENV}
    env.pop("RAY_ADDRESS", None)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        peak, timeline = 0, []
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            kinds: dict[str, list[int]] = {}
            try:
                for p in [parent, *parent.children(recursive=True)]:
                    try:
                        (pss, store), kind = _pss(p), _kind(p)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                    k = kinds.setdefault(kind, [0, 0, 0])
                    k[0], k[1], k[2] = k[0] + 1, k[1] + pss, k[2] + store
            except psutil.NoSuchProcess:
                break
            total = sum(v[1] for v in kinds.values())
            peak = max(peak, total)
            timeline.append((round(time.perf_counter() - start), _stage(log), round(total / 2**20),
                             {k: [n, round(v / 2**20), round(st / 2**20)] for k, (n, v, st) in sorted(kinds.items())}))
            time.sleep(1.0)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, f"{cmd[:4]} failed, see {log}"
    return {"seconds": wall, "peak_pss_bytes": peak, "timeline_mib": timeline}


def stage_peaks(timeline: list) -> str:
    """Per stage, the sample with the most memory and what it was made of: process kind, count,
    MiB (of which pages of the object store, shared with the other processes mapping them)."""
    best: dict[str, tuple] = {}
    for sample in timeline:
        if sample[2] > best.get(sample[1], (0, "", 0))[2]:
            best[sample[1]] = sample
    lines = []
    for stage, (t, _, total, kinds) in best.items():
        store = sum(k[2] for k in kinds.values())
        parts = ", ".join(f"{k} {n}x {v}" + (f" ({st} store)" if st else "")
                          for k, (n, v, st) in sorted(kinds.items(), key=lambda kv: -kv[1][1]))
        lines.append(f"  {stage}: peak {total} MiB ({store} object store) at {t} s: {parts}")
    return "\n".join(lines)


def kopretrain_cmd(corpus: Path, out: Path, cores: int) -> list[str]:
    return [sys.executable, "-m", "kopretrain", "prepare",
            f"sources=[{{name:ko,path:{corpus}/ko,domain:ko}},{{name:en,path:{corpus}/en,domain:en}}]",
            f"output_dir={out}", f"tokenizer.path={TOKENIZER}", "seq_len=2048", "tracking.enabled=false",
            f"num_parallel_tasks={cores}", f"hydra.run.dir={out}/run"]


def run_datatrove(corpus: Path, out: Path, cores: int) -> None:
    """The datatrove pipelines (called in a subprocess by `--datatrove`)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter, ParquetWriter
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return text.split("\n")

        def span_tokenize(self, text):
            raise NotImplementedError

    class Chars(Whitespace):  # MinHash over character 5-grams of the space-free text, like kopretrain
        def word_tokenize(self, text):
            return list("".join(text.split()))

    files = sorted(str(p.relative_to(corpus)) for p in corpus.glob("*/*.jsonl"))
    ws = Whitespace()
    minhash = MinhashConfig(n_grams=5, num_buckets=9, hashes_per_bucket=13)  # xxhash, 64 bit: its default
    stages = [
        ([JsonlReader(str(corpus), glob_pattern="*/*.jsonl"),
          GopherRepetitionFilter(language=ws, top_n_grams=((2, 1.0), (3, 1.0), (4, 1.0))),
          GopherQualityFilter(language=ws, min_stop_words=None, min_doc_words=1, min_avg_word_length=1,
                              max_ellipsis_lines_ratio=1.0, max_symbol_word_ratio=1.0),
          PIIFormatter(), JsonlWriter(str(out / "filtered"), compression=None),
          MinhashDedupSignature(str(out / "sigs"), config=minhash, language=Chars())], len(files)),
        ([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=minhash)], minhash.num_buckets),
        ([MinhashDedupCluster(str(out / "buckets"), str(out / "remove_ids"), config=minhash)], 1),
        ([JsonlReader(str(out / "filtered")), MinhashDedupFilter(str(out / "remove_ids")),
          ParquetWriter(str(out / "clean")),
          DocumentTokenizer(str(out / "tokens"), tokenizer_name_or_path=str(TOKENIZER), eos_token="<|endoftext|>",
                            shuffle_documents=False)], len(files)),
    ]
    for i, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(cores, tasks),
                              logging_dir=str(out / f"logs{i}")).run()


def utf8_check(work: Path) -> str:
    """One invalid UTF-8 line among 2,000: how many documents each reader still yields."""
    from datatrove.pipeline.readers import JsonlReader

    from kopretrain.config.data_stages import SourceConfig
    from kopretrain.data.read import list_files, plan_reads, read_task

    d = work / "utf8"
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"text": f"문서 번호 {i} 입니다"}, ensure_ascii=False).encode() for i in range(2000)]
    lines[100] = b'{"text": "\xff\xfe broken"}'
    (d / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    theirs = sum(1 for _ in JsonlReader(str(d))())
    source = SourceConfig(name="a", path=str(d / "a.jsonl"), domain="ko")
    records = [r for t in plan_reads(source, list_files(source), 1 << 30) for r in read_task(t, source)]
    ours = sum(r["reason"] is None for r in records)
    shutil.rmtree(d)
    return (f"One invalid UTF-8 line at line 101 of 2,000: datatrove's JsonlReader yields {theirs:,} documents "
            f"(decoding stops at the first bad block and the rest of the file is skipped with a warning); kopretrain yields {ours:,} and rejects "
            f"{len(records) - ours} line as `{next(r['reason'] for r in records if r['reason'])}`.")


def cpu_model() -> str:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")


def bench_size(size_mb: float, cores: int, work: Path, datatrove: bool, keep_corpus: bool = False) -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from make_corpus import JUNK, RATES, generate

    corpus, out = work / f"corpus-{size_mb:g}", work / f"out-{size_mb:g}"
    shutil.rmtree(out, ignore_errors=True)
    if keep_corpus and (corpus / "manifest.json").exists():  # generated by an earlier --keep-corpus run
        manifest = json.loads((corpus / "manifest.json").read_text())
    else:
        shutil.rmtree(corpus, ignore_errors=True)
        manifest = generate(corpus, size_mb, seed=0, rates=RATES, junk=[k for k in JUNK if k != "invalid_utf8"])
    total_bytes = sum(manifest["bytes"].values())
    result = {"size_mb": size_mb, "bytes": total_bytes, "docs": manifest["num_docs"]}
    print(f"# {size_mb:g} MB: {manifest['num_docs']:,} documents; disk free {shutil.disk_usage(work).free / 1e9:.0f} GB", flush=True)
    result["kopretrain"] = measure(kopretrain_cmd(corpus, out / "kopretrain", cores), work / f"kopretrain-{size_mb:g}.log")
    report = json.loads((out / "kopretrain" / "report.json").read_text())
    assert report["totals"]["docs_in"] == manifest["num_docs"]  # every line read and accounted for
    result["kopretrain"].update(docs_out=report["totals"]["docs_out"], exact=report["totals"]["exact_dups"],
                                near=report["totals"]["near_dups"], stage_seconds=report["seconds"],
                                tokens=sum(t["num_tokens"] for t in report["tokens"].values()))
    print(json.dumps({k: v for k, v in result["kopretrain"].items() if k != "timeline_mib"}), flush=True)
    print(stage_peaks(result["kopretrain"]["timeline_mib"]), flush=True)
    if datatrove:
        cmd = [sys.executable, __file__, "--datatrove", str(corpus), str(out / "datatrove"), "--cores", str(cores)]
        result["datatrove"] = measure(cmd, work / f"datatrove-{size_mb:g}.log")
        stats = json.loads((out / "datatrove" / "logs0" / "stats.json").read_text())
        result["datatrove"]["docs_read"] = stats[0]["stats"]["documents"]["total"]  # the JsonlReader step
        readable = manifest["num_docs"] - manifest["planted"].get("junk_malformed_json", 0) - manifest["planted"].get("junk_missing_text", 0)
        assert result["datatrove"]["docs_read"] == readable, (result["datatrove"]["docs_read"], readable)  # it read it all
        print(json.dumps({k: v for k, v in result["datatrove"].items() if k != "timeline_mib"}), flush=True)
    if not keep_corpus:
        shutil.rmtree(corpus, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return result


def markdown(results: list[dict], cores: int) -> str:
    lines = [f"Machine: {cpu_model()}, {os.cpu_count()} cores ({cores} used), "
             f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM.", "",
             "| input | tool | wall s | MB/s | docs/s | MB/s per core | docs/s per core | peak memory (PSS) | kopretrain speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for tool in ("kopretrain", "datatrove"):
            if tool not in r:
                continue
            m = r[tool]
            mbs, docs = r["bytes"] / 1e6 / m["seconds"], r["docs"] / m["seconds"]
            ratio = f"{r['datatrove']['seconds'] / r['kopretrain']['seconds']:.2f}x" if tool == "datatrove" and "datatrove" in r else ""
            lines.append(f"| {r['size_mb']:g} MB | {tool} | {m['seconds']:.0f} | {mbs:.2f} | {docs:,.0f} | {mbs / cores:.2f} | "
                         f"{docs / cores:,.0f} | {m['peak_pss_bytes'] / 2**30:.2f} GiB | {ratio} |")
    best = results[-1]
    per_core = best["bytes"] / 1e6 / best["kopretrain"]["seconds"] / cores
    lines += ["", f"Projection at {per_core:.2f} MB/s per core (the {best['size_mb']:g} MB run, linear in cores): "
              f"61 GB takes {61_000 / (per_core * 64) / 60:.0f} min on one 64-core node and "
              f"{61_000 / (per_core * 256) / 60:.0f} min on 4 such nodes."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, nargs="+", default=[100])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/prepare-bench"))
    ap.add_argument("--no-datatrove", action="store_true", help="kopretrain only (e.g. for memory runs)")
    ap.add_argument("--keep-corpus", action="store_true", help="keep (and reuse) the generated corpora in --work")
    ap.add_argument("--object-store", action="store_true",
                    help="timeline: also the object-store pages in each process's PSS (costs CPU: not for timings)")
    ap.add_argument("--utf8-check", action="store_true", help="only compare the readers on one invalid UTF-8 line")
    ap.add_argument("--datatrove", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datatrove:
        run_datatrove(Path(args.datatrove[0]), Path(args.datatrove[1]), args.cores)
        return
    if args.utf8_check:
        print(utf8_check(args.work))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    global STORE_BREAKDOWN
    STORE_BREAKDOWN = args.object_store
    results = [bench_size(s, args.cores, args.work, not args.no_datatrove, args.keep_corpus) for s in args.size_mb]
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(markdown(results, args.cores))


if __name__ == "__main__":
    main()
