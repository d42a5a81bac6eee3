"""Ray Data glue of `prepare`: run the unit jobs of `parts.py` and the dedup shuffles on Ray.

Two shapes of work:

- `map_jobs(fn, jobs)`: one Ray Data task per job (a read task, a part, a domain), at most
  `num_parallel` at a time, each writing its own files; returns the jobs' small result dicts.
  Ray Data's progress bars show the stage advancing. Outputs never pass through the driver.
- `exact_pairs` / `near_pairs`: the distributed dedup. Only keys travel: (doc_key, hash) rows for
  exact dedup, (doc_key, band key) rows for MinHash LSH. Ray Data hash-partitions them by key
  (`repartition(keys=..., sort=True)`, the shuffle `groupby().map_groups()` uses), so every
  document sharing a key lands in the same sorted block, where `dedup.duplicate_pairs` emits
  (member, first member) pairs vectorised (no Python call per group). Only those pairs, i.e.
  only documents that collide, come back to the driver: 16 bytes per colliding document and
  band, which is what `connected_components` then resolves.

Memory: a shuffle partition holds ~`rows / num_partitions` keys of 16 bytes; the auto partition
count keeps that near 16 MiB (see `shuffle_partitions`), so a shuffle task needs the same memory
at 100 MB or 61 GB. The keys in flight live in the object store (16 B x docs x bands in all, a
few GB at 61 GB over a cluster); set RAY_DATA_ENABLE_DISK_SHUFFLE=1 where that is too much.
The driver holds the colliding pairs and the sorted doc keys of removed documents (8-24 bytes
per duplicate), never text.
"""

from __future__ import annotations

import math
import pickle
from typing import Callable

import numpy as np

from kopretrain.data.dedup import duplicate_pairs

KEY_BYTES = 16  # one shuffled row: uint64 key + int64 doc key
TARGET_PARTITION_BYTES = 16 << 20


def shuffle_partitions(num_rows: int, num_cpus: int, requested: int = 0) -> int:
    """Partitions for a key shuffle of `num_rows` rows: ~16 MiB each, at least one per CPU."""
    if requested:
        return requested
    return max(num_cpus, math.ceil(num_rows * KEY_BYTES / TARGET_PARTITION_BYTES), 1)


def _run_job(batch: dict, fn: Callable) -> dict:
    results = [pickle.dumps(fn(pickle.loads(job))) for job in batch["job"]]
    return {"index": batch["index"], "result": np.array(results, dtype=object)}


def map_jobs(fn: Callable, jobs: list, num_parallel: int) -> list:
    """fn(job) for every job as Ray Data tasks (one job per block); results in job order."""
    import ray

    if not jobs:
        return []
    items = [{"index": i, "job": pickle.dumps(job)} for i, job in enumerate(jobs)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        _run_job, batch_size=1, batch_format="numpy", fn_kwargs={"fn": fn}, num_cpus=1,
        compute=ray.data.TaskPoolStrategy(size=max(1, min(num_parallel, len(jobs)))),
    )
    rows = sorted(ds.take_all(), key=lambda r: int(r["index"]))
    assert len(rows) == len(jobs)
    return [pickle.loads(r["result"]) for r in rows]


def _pairs_of_block(block: dict, key: str) -> dict:
    members, firsts = duplicate_pairs(block[key], block["doc_key"])
    return {"member": members, "first": firsts}


def _collect_pairs(ds, key: str, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    import ray

    # The shuffle's map side coalesces its input up to 1 GiB by default before partitioning,
    # so its memory would grow with the corpus up to that; cap it at one partition's size.
    ray.data.DataContext.get_current().shuffle_input_batch_bytes = TARGET_PARTITION_BYTES
    ds = ds.repartition(num_partitions, keys=[key], sort=True)
    # batch_size=None: the whole sorted partition at once, so a key's group is never split
    ds = ds.map_batches(_pairs_of_block, batch_size=None, batch_format="numpy", fn_kwargs={"key": key})
    members, firsts = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        members.append(batch["member"].astype(np.int64))
        firsts.append(batch["first"].astype(np.int64))
    return np.concatenate(members), np.concatenate(firsts)


def _read_keys(batch: dict, columns: list[str]) -> dict:
    """The key columns of the stage parts named in `batch["path"]` (pyarrow, column projection)."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=columns) for p in batch["path"]]
    return {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in columns}


def _files(stage_files: list[str]):
    """A dataset of part paths, one per block (the reading map caps its concurrency)."""
    import ray

    return ray.data.from_items([{"path": p} for p in stage_files], override_num_blocks=len(stage_files))


def exact_pairs(stage_files: list[str], num_rows: int, num_parallel: int, requested_partitions: int = 0):
    """(removed doc key, kept doc key) for every exact duplicate, shuffled on the text hash."""
    import ray

    ds = _files(stage_files).map_batches(
        _read_keys, batch_size=1, batch_format="numpy", fn_kwargs={"columns": ["doc_key", "hash"]},
        compute=ray.data.TaskPoolStrategy(size=num_parallel))
    return _collect_pairs(ds, "hash", shuffle_partitions(num_rows, num_parallel, requested_partitions))


def _explode_bands(batch: dict, band_columns: list[str], removed_ref) -> dict:
    """One row per (document, band) of the parts in `batch`, for documents that survived exact dedup."""
    import ray

    removed = ray.get(removed_ref)  # fn_kwargs are not resolved by Ray Data; zero-copy from the object store
    cols = _read_keys(batch, ["doc_key", *band_columns])
    keep = ~np.isin(cols["doc_key"], removed, assume_unique=True)
    keys = np.stack([cols[c][keep] for c in band_columns], axis=1)
    return {"band_key": keys.ravel(), "doc_key": np.repeat(cols["doc_key"][keep], len(band_columns))}


def near_pairs(stage_files: list[str], num_bands: int, exact_removed: np.ndarray, num_rows: int, num_parallel: int,
               requested_partitions: int = 0):
    """Edges (doc key, first doc key of a shared band) of the near-duplicate graph."""
    import ray

    band_columns = [f"band_{k:02d}" for k in range(num_bands)]
    ds = _files(stage_files).map_batches(
        _explode_bands, batch_size=1, batch_format="numpy", compute=ray.data.TaskPoolStrategy(size=num_parallel),
        fn_kwargs={"band_columns": band_columns, "removed_ref": ray.put(exact_removed)})
    return _collect_pairs(ds, "band_key", shuffle_partitions(num_rows * num_bands, num_parallel, requested_partitions))
