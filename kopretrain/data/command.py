"""`kopretrain prepare`: raw corpora -> clean/, rejected/, duplicates/, <tokens_dir>/<domain>/, report.json.

    kopretrain prepare source=sample output_dir=outputs/corpus                  # clean + dedup only
    kopretrain prepare source=sample output_dir=outputs/corpus tokenizer.path=tok.model tokens_dir=outputs/tok_a

In code (the demo): `run_prepare(PrepareConfig(sources=[SourceConfig(...)], output_dir=...), run_dir)`.

Stages, each resumable (see `parts.py` for the per-job markers):
1. clean    one Ray Data task per read task: read, validate, normalize, filter, scrub, hash
2. dedup    exact (shuffle on the text hash), then MinHash LSH (shuffle on band keys) -> union-find
3. final    one task per part: write clean/ without the duplicates
4. tokens   one task per clean part: encode + EOS; then one task per domain: pack into shards

Stages 1-3 are keyed on a fingerprint of the input files (path, size, mtime) and of the clean and
dedup config; stage 4 on that plus the tokenizer's fingerprint and seq_len. Re-running on the
same output_dir reuses whatever has the same fingerprint (a tokenizer-only change re-does only
stage 4), finishes jobs a killed run left undone, and redoes anything whose fingerprint changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from kopretrain.config.prepare import PrepareConfig
from kopretrain.data.dedup import DedupParams
from kopretrain.data.parts import PART_BITS, CleanJob, Layout, read_json, write_json
from kopretrain.data.report import accounting, add_tokens, format_summary

PIPELINE_VERSION = 2  # 2: unpaired <s>/</s> stay text; bump when a change alters outputs: old stage files are then redone


def _log(message: str) -> None:
    print(f"prepare: {message}", flush=True)


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dedup_params(cfg: PrepareConfig) -> DedupParams:
    d = cfg.dedup
    return DedupParams(d.shingle_chars, d.shingle_whitespace, d.num_perm, d.threshold, d.num_bands, d.rows_per_band, d.seed)


def clean_fingerprint(cfg: PrepareConfig, files: dict[str, list[str]]) -> str:
    """Inputs (files with size and mtime) + everything that changes clean/ or its part layout."""
    stats = {name: [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in fs] for name, fs in files.items()}
    bad_words = cfg.clean.filter.bad_words_path
    extra = [bad_words, os.stat(bad_words).st_mtime_ns] if bad_words and os.path.exists(bad_words) else []
    # how the shuffles are cut up never changes which documents are duplicates
    dedup = {k: v for k, v in dataclasses.asdict(cfg.dedup).items() if k not in ("num_shuffle_partitions", "shuffle_wave_bytes")}
    return _digest({"version": PIPELINE_VERSION, "sources": [dataclasses.asdict(s) for s in cfg.sources], "files": stats,
                    "clean": dataclasses.asdict(cfg.clean), "bad_words": extra, "dedup": dedup,
                    "read_chunk_bytes": cfg.read_chunk_bytes})


def _remove(paths) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def clear_tokens(tokens_dir: Path) -> None:
    """Remove packed tokens that prepare wrote (the manifest's domains), manifest first."""
    manifest = read_json(tokens_dir / "manifest.json")
    if manifest is None:
        return
    (tokens_dir / "manifest.json").unlink()
    for d in manifest["domains"]:
        _remove([tokens_dir / d / "index.json", *(tokens_dir / d).glob("shard-*.bin")])


def _num_parallel(cfg: PrepareConfig) -> int:
    """Concurrent tasks per stage (and the least number of shuffle partitions). A local instance
    advertises >= 8 logical CPUs (for Train workers); CPU-bound prepare tasks beyond the real
    cores only add memory and worker start-ups."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    joined = bool(cfg.ray.address or os.environ.get("RAY_ADDRESS"))
    return cfg.num_parallel_tasks or (cpus if joined else min(cpus, os.cpu_count() or 1))


def _clean_and_dedup(cfg: PrepareConfig, layout: Layout, tasks: list, fingerprint: str) -> dict:
    """Stages 1-3; returns the accounting (and writes it to _stage/clean_done.json)."""
    from kopretrain.data import parts, pipeline

    state = read_json(layout.stage / "state.json")
    if state is None or state["fingerprint"] != fingerprint:
        # other inputs or config: nothing of an earlier run is valid; clear only what prepare writes
        _remove([layout.output_dir / d for d in ("clean", "rejected", "duplicates")] + [layout.stage])
        clear_tokens(layout.output_dir / "tokens")  # the default tokens_dir: made from data that is gone
        write_json(layout.stage / "state.json", {"fingerprint": fingerprint})
    parallel = _num_parallel(cfg)
    params = dedup_params(cfg)
    d = cfg.dedup
    markers = [read_json(layout.part("stage", i, ".json")) for i in range(len(tasks))]
    todo = [i for i, m in enumerate(markers) if m is None]
    t0 = time.time()
    _log(f"[1/4] clean: {len(todo)} of {len(tasks)} read tasks to run ({len(tasks) - len(todo)} done earlier), {parallel} in parallel")
    jobs = [CleanJob(i, tasks[i][1], tasks[i][0], cfg.clean, params, d.exact, d.near, cfg.num_records_per_batch, layout)
            for i in todo]
    for i, m in zip(todo, pipeline.map_jobs(parts.clean_part, jobs, parallel)):
        markers[i] = m
    seconds = {"clean": time.time() - t0}

    t0 = time.time()
    dedup_file = layout.stage / "dedup.npz"
    num_docs = sum(m["num_docs_clean"] for m in markers)
    stage_files = [str(layout.part("stage", i)) for i, m in enumerate(markers) if m["num_docs_clean"]]
    if dedup_file.exists():
        saved = np.load(dedup_file)
        exact_removed, near_removed = saved["exact"], saved["near"]
    else:
        _log(f"[2/4] dedup: shuffling the keys of {num_docs:,} documents")
        exact_removed = near_removed = np.empty(0, np.int64)
        if d.exact and num_docs:
            exact_removed = pipeline.exact_duplicates(stage_files, num_docs, parallel, d.num_shuffle_partitions,
                                                      d.shuffle_wave_bytes)
        if d.near and num_docs:
            num_bands, _ = params.bands()
            near_removed = pipeline.near_duplicates(stage_files, num_bands, exact_removed, num_docs, parallel,
                                                    d.num_shuffle_partitions, d.shuffle_wave_bytes)
        pipeline.release_memory()  # the union-find's scratch: the driver lives on through stage 4
        tmp = layout.stage / "dedup.tmp.npz"
        np.savez(tmp, exact=exact_removed, near=near_removed)
        os.replace(tmp, dedup_file)
    _log(f"[2/4] dedup: {num_docs:,} documents, {len(exact_removed):,} exact and {len(near_removed):,} near duplicates")
    seconds["dedup"] = time.time() - t0

    t0 = time.time()
    finals = [read_json(layout.part("final", i, ".json")) for i in range(len(tasks))]
    todo = [i for i, f in enumerate(finals) if f is None]
    _log(f"[3/4] write clean/: {len(todo)} of {len(tasks)} parts to write")

    def rows_of(keys: np.ndarray, i: int) -> np.ndarray:
        lo, hi = np.searchsorted(keys, [i << PART_BITS, (i + 1) << PART_BITS])
        return (keys[lo:hi] - (i << PART_BITS)).astype(np.int64)

    jobs = [(layout, i, rows_of(exact_removed, i), rows_of(near_removed, i)) for i in todo]
    for i, f in zip(todo, pipeline.map_jobs(_finalize, jobs, parallel)):
        finals[i] = f
    seconds["write"] = time.time() - t0
    return {"markers": markers, "finals": finals, "seconds": seconds}


def _finalize(job: tuple) -> dict:
    from kopretrain.data.parts import finalize_part

    return finalize_part(*job)


def _tokenize(job: tuple) -> dict:
    from kopretrain.data.parts import tokenize_part

    return tokenize_part(*job)


def _pack(job: tuple) -> dict:
    from kopretrain.data.tokenize import pack_domain

    part_files, out_dir, kwargs = job
    return pack_domain(part_files, out_dir, **kwargs)


def _tokens(cfg: PrepareConfig, layout: Layout, tokenizer, clean_fp: str, result: dict, tokens_dir: Path) -> dict:
    """Stage 4: tokenize clean parts, pack per domain; returns {domain: index.json}."""
    from kopretrain.data import pipeline

    rows_per_shard = max(1, cfg.num_tokens_per_shard // cfg.seq_len)
    fp = _digest({"clean": clean_fp, "tokenizer": tokenizer.fingerprint, "encoder": tokenizer.encoder_version, "seq_len": cfg.seq_len,
                  "rows_per_shard": rows_per_shard, "version": PIPELINE_VERSION})
    manifest = read_json(tokens_dir / "manifest.json")
    domains = sorted({m["domain"] for m in result["markers"]})
    if manifest is not None and manifest["fingerprint"] == fp:
        indexes = {d: read_json(tokens_dir / d / "index.json") for d in manifest["domains"]}
        if all(i is not None and i.get("prepare_fingerprint") == fp for i in indexes.values()):
            _log(f"[4/4] tokens: up to date in {tokens_dir} (fingerprint {fp})")
            return indexes
    if manifest is not None:  # made from other data or with another tokenizer: never mix, redo
        _log(f"[4/4] tokens: {tokens_dir} holds fingerprint {manifest['fingerprint']}, not {fp}: redoing")
        clear_tokens(tokens_dir)
    stage = layout.stage / f"tokens-{fp}"
    _remove([p for p in layout.stage.glob("tokens-*") if p != stage])
    parallel = _num_parallel(cfg)
    parts = [(i, m["domain"]) for i, m in enumerate(result["markers"]) if result["finals"][i]["num_docs_out"]]
    token_file = {i: stage / f"part-{i:05d}.bin" for i, _ in parts}
    todo = [i for i, _ in parts if not (stage / f"part-{i:05d}.bin.json").exists()]
    t0 = time.time()
    _log(f"[4/4] tokens: encoding {len(todo)} of {len(parts)} clean parts with {tokenizer.path}")
    jobs = [(layout.part("clean", i), token_file[i], tokenizer.path, cfg.tokenizer.num_docs_per_batch) for i in todo]
    pipeline.map_jobs(_tokenize, jobs, parallel)
    meta = {"eos_id": tokenizer.eos_id, "vocab_size": tokenizer.vocab_size, "fingerprint": tokenizer.fingerprint}
    indexes, jobs = {}, []
    for d in domains:
        index = read_json(tokens_dir / d / "index.json")
        if index is not None and index.get("prepare_fingerprint") == fp:
            indexes[d] = index  # packed by a run that was killed before writing the manifest
            continue
        files = [token_file[i] for i, dom in parts if dom == d]
        counts = [read_json(f.with_name(f.name + ".json")) for f in files]
        extra = {"num_docs": sum(c["num_docs"] for c in counts), "num_chars": sum(c["num_chars"] for c in counts),
                 "domain": d, "prepare_fingerprint": fp}
        jobs.append((files, tokens_dir / d, {"seq_len": cfg.seq_len, "rows_per_shard": rows_per_shard,
                                              "tokenizer_meta": meta, **extra}))
    _log(f"[4/4] tokens: packing {len(jobs)} domain(s) into {tokens_dir} (seq_len {cfg.seq_len})")
    for job, index in zip(jobs, pipeline.map_jobs(_pack, jobs, parallel)):
        indexes[job[2]["domain"]] = index
    result["token_seconds"] = {"tokens": time.time() - t0}
    write_json(tokens_dir / "manifest.json", {"fingerprint": fp, "clean_fingerprint": clean_fp, "domains": domains,
                               "tokenizer": tokenizer.path, "tokenizer_fingerprint": tokenizer.fingerprint,
                               "seq_len": cfg.seq_len, "clean_dir": str(layout.output_dir / "clean")})
    if not cfg.keep_intermediate:
        _remove([stage])
    return indexes


def _plan(cfg: PrepareConfig) -> tuple[list, dict[str, list[str]]]:
    """Every source's files and read tasks, in a fixed order; UserError for a bad source, before Ray starts."""
    from kopretrain.data.read import list_files, plan_reads

    files = {s.name: list_files(s) for s in cfg.sources}
    chunk = read_chunk_bytes(cfg.read_chunk_bytes, sum(os.path.getsize(f) for fs in files.values() for f in fs))
    tasks = [(s, t) for s in cfg.sources for t in plan_reads(s, files[s.name], chunk)]
    return tasks, files


def read_chunk_bytes(limit: int, total_bytes: int) -> int:
    """Bytes per read task: at most `limit`, but small enough that even a small corpus makes ~64
    tasks to spread over the cluster (never under 1 MiB). A function of the input size only, so
    the part layout (and every output file) does not depend on how many workers run it."""
    return max(min(limit, total_bytes // 64), min(limit, 1 << 20))


def run_prepare(cfg: PrepareConfig, run_dir: Path) -> dict:
    """Run (or resume) prepare; writes outputs and output_dir/report.json, returns the report."""
    from kopretrain.ray_session import init_ray
    from kopretrain.tokenizer.load import load_tokenizer
    from kopretrain.tracking import start_run

    out = Path(cfg.output_dir).expanduser().resolve() if cfg.output_dir else Path(run_dir).resolve()
    layout = Layout(out)
    tokens_dir = Path(cfg.tokens_dir).expanduser().resolve() if cfg.tokens_dir else out / "tokens"
    tokenizer = load_tokenizer(cfg.tokenizer.path) if cfg.tokenizer.path else None  # fail fast on a bad path
    tasks, files = _plan(cfg)
    fingerprint = clean_fingerprint(cfg, files)
    # opened before the work, so the MLflow run lasts as long as the command (the CLI ends it FAILED on an error)
    tracker = start_run(cfg.tracking, run_name=f"prepare-{Path(run_dir).name}", config=cfg)
    done = read_json(layout.stage / "clean_done.json")
    resumed = done is not None and done["fingerprint"] == fingerprint
    if resumed:
        _log(f"clean + dedup: up to date in {out} (fingerprint {fingerprint})")
        result = done["result"]
    else:
        init_ray(cfg.ray, log_dir=Path(run_dir) / "logs")
        result = _clean_and_dedup(cfg, layout, tasks, fingerprint)
        accounting(result["markers"], result["finals"], {}, {s.name: s.domain for s in cfg.sources})  # asserts balance
        write_json(layout.stage / "clean_done.json", {"fingerprint": fingerprint, "result": result})
        if not cfg.keep_intermediate:
            _remove([layout.stage / "clean", layout.stage / "final", layout.stage / "dedup.npz"])
    sources = {s.name: s.domain for s in cfg.sources}
    bytes_in = {name: sum(os.path.getsize(f) for f in fs) for name, fs in files.items()}
    report = {"output_dir": str(out), "clean_dir": str(out / "clean"), "rejected_dir": str(out / "rejected"),
              "duplicates_dir": str(out / "duplicates"), "fingerprint": fingerprint, "clean_reused": resumed,
              "num_read_tasks": len(tasks), **accounting(result["markers"], result["finals"], bytes_in, sources)}
    params = dedup_params(cfg)
    report["dedup"] = {"exact": cfg.dedup.exact, "near": cfg.dedup.near, "threshold": params.threshold,
                       "num_perm": params.num_perm, "bands": list(params.bands()), "shingle_chars": params.shingle_chars}
    if tokenizer is not None:
        init_ray(cfg.ray, log_dir=Path(run_dir) / "logs")
        indexes = _tokens(cfg, layout, tokenizer, fingerprint, result, tokens_dir)
        report["tokens_dir"] = str(tokens_dir)
        add_tokens(report, indexes)
    else:
        _log("[4/4] tokens: skipped (tokenizer.path not set)")
    report["seconds"] = {} if resumed else dict(result["seconds"])
    report["seconds"].update(result.get("token_seconds", {}))
    print(format_summary(report), flush=True)
    totals = report["totals"]
    tracker.log_metrics({k: totals[k] for k in ("docs_in", "docs_out", "exact_dups", "near_dups", "bytes_out")}
                        | {f"rejected_{k}": v for k, v in totals["rejected"].items()}
                        | {f"tokens_{d}": t["num_tokens"] for d, t in report.get("tokens", {}).items()})
    tracker.log_dict(report, "report.json")
    tracker.end()
    report["mlflow_run_id"] = tracker.run_id
    write_json(out / "report.json", report)
    return report
