"""Ray Data glue of `prepare`: run the unit jobs of `parts.py` and the dedup shuffles on Ray.

Two shapes of work:

- `map_jobs(fn, jobs)`: one Ray Data task per job (a read task, a part, a domain), at most
  `num_parallel` at a time, each writing its own files; returns the jobs' small result dicts.
  Ray Data's progress bars show the stage advancing. Outputs never pass through the driver.
- `exact_duplicates` / `near_duplicates`: the distributed dedup. Only keys travel: (hash, doc_key)
  rows for exact dedup, (band key, doc_key) rows for MinHash LSH. Ray Data hash-partitions them by key
  (`repartition(keys=..., sort=True)`, the shuffle `groupby().map_groups()` uses), so every
  document sharing a key lands in the same sorted block, where `dedup.duplicate_pairs` emits
  (member, first member) pairs vectorised (no Python call per group). Only those pairs, i.e.
  only documents that collide, come back to the driver (16 bytes per colliding document and
  band), where `connected_components` resolves them into clusters.

Memory of the dedup tasks does not depend on the corpus size (bench/prepare.md: 100 MB vs 1 GB):
- Ray Data runs at most `num_parallel` tasks of a dedup dataset at once (its resource limit,
  set on the dataset's own DataContext copy). On a cluster that is all its CPUs; on a local
  instance, which advertises more logical CPUs than cores, it stops Ray from starting (and then
  keeping idle) a shuffle worker per logical CPU: those processes were what grew with the corpus.
- A shuffle partition holds ~16 MiB of keys (`shuffle_partitions`), so does a shuffle map batch.
- Workers give freed memory back to the OS between tasks (`release_memory`), so a worker Ray
  keeps for later stages does not hold the high-water mark of the biggest task it ran.
- Keys are shuffled in waves of disjoint key ranges (`dedup.key_waves`), each at most 64 MiB
  of keys per parallel task (`shuffle_waves`), so the keys in the object store at once are
  bounded too; the pairs found are the same for any number of waves.
What grows with the corpus is on the driver, per duplicate and never text: the sorted doc keys
of removed documents (8 bytes each) and, for near duplicates, one (document, root) pair per
colliding document (16 bytes) plus one wave's edges while the union-find folds them in.
"""

from __future__ import annotations

import math
import pickle
from typing import Callable

import numpy as np

from kopretrain.data.dedup import connected_components, duplicate_pairs, key_waves

KEY_BYTES = 16  # one shuffled row: uint64 key + int64 doc key
TARGET_PARTITION_BYTES = 16 << 20
WAVE_BYTES_PER_TASK = 64 << 20


def shuffle_partitions(num_rows: int, num_cpus: int, requested: int = 0) -> int:
    """Partitions for a key shuffle of `num_rows` rows: ~16 MiB each, at least one per CPU."""
    if requested:
        return requested
    return max(num_cpus, math.ceil(num_rows * KEY_BYTES / TARGET_PARTITION_BYTES), 1)


def shuffle_waves(num_rows: int, num_parallel: int, wave_bytes: int = 0) -> int:
    """Waves a key shuffle of `num_rows` rows runs in: at most `wave_bytes` of keys each
    (0 = 64 MiB per parallel task, so a bigger cluster runs fewer, bigger waves)."""
    budget = wave_bytes or WAVE_BYTES_PER_TASK * num_parallel
    return max(1, math.ceil(num_rows * KEY_BYTES / budget))


def release_memory() -> None:
    """Give the memory earlier tasks freed back to the OS. Ray keeps a worker process for the next
    task, and Arrow's allocator (mimalloc) and glibc's malloc keep freed pages by default, so each
    worker would hold the high-water mark of the largest task it ran (of any stage) for the rest
    of the run. Measured: a finalize task on a 16 MiB part leaves 197 MiB resident, 142 after this."""
    import ctypes

    import pyarrow as pa

    # no gc.collect(): 75 ms in a worker (Ray's objects), and the data here is freed by refcount
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def _run_job(batch: dict, fn: Callable) -> dict:
    release_memory()  # what the previous task (and Ray Data's handling of its output) left
    results = [pickle.dumps(fn(pickle.loads(job))) for job in batch["job"]]
    release_memory()
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


def _wave_pairs(wave_rows: Callable, num_rows: int, num_parallel: int, requested_partitions: int, wave_bytes: int):
    """Yields the (members, firsts) pairs of each wave; `wave_rows(wave, num_waves)` is the
    dataset of the (key, doc_key) rows of one wave."""
    num_waves = shuffle_waves(num_rows, num_parallel, wave_bytes)
    partitions = shuffle_partitions(math.ceil(num_rows / num_waves), num_parallel, requested_partitions)
    for wave in range(num_waves):
        ds = wave_rows(wave, num_waves).repartition(partitions, keys=["key"], sort=True)
        # batch_size=None: the whole sorted partition at once, so a key's group is never split
        ds = ds.map_batches(_pairs_of_block, batch_size=None, batch_format="numpy")
        members, firsts = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            members.append(batch["member"].astype(np.int64))
            firsts.append(batch["first"].astype(np.int64))
        yield np.concatenate(members), np.concatenate(firsts)


def _pairs_of_block(block: dict) -> dict:
    release_memory()
    members, firsts = duplicate_pairs(block["key"], block["doc_key"])
    return {"member": members, "first": firsts}


def _read_keys(paths, columns: list[str]) -> dict:
    """The key columns of the stage parts at `paths` (pyarrow, column projection)."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=columns) for p in paths]
    return {c: np.concatenate([t.column(c).to_numpy() for t in tables]) for c in columns}


def _wave_rows(batch: dict, key_columns: list[str], wave: int, num_waves: int, removed_ref) -> dict:
    """(key, doc_key) rows of the parts in `batch`, one per document and key column, for the
    documents not removed before (`removed_ref`) and the keys that fall in `wave`."""
    import ray

    release_memory()
    cols = _read_keys(batch["path"], ["doc_key", *key_columns])
    keep = np.ones(len(cols["doc_key"]), dtype=bool)
    if removed_ref is not None:  # fn_kwargs are not resolved by Ray Data; zero-copy from the object store
        keep = ~np.isin(cols["doc_key"], ray.get(removed_ref), assume_unique=True)
    keys = np.stack([cols[c][keep] for c in key_columns], axis=1).ravel()
    docs = np.repeat(cols["doc_key"][keep], len(key_columns))
    in_wave = key_waves(keys, num_waves) == wave
    return {"key": keys[in_wave], "doc_key": docs[in_wave]}


def _wave_dataset(stage_files: list[str], key_columns: list[str], num_parallel: int, removed_ref=None) -> Callable:
    """wave, num_waves -> the dataset of that wave's (key, doc_key) rows, one read task per part."""
    import ray

    def wave_rows(wave: int, num_waves: int):
        ds = ray.data.from_items([{"path": p} for p in stage_files], override_num_blocks=len(stage_files))
        ctx = ds.context  # this dataset's own copy: nothing global changes
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(cpu=num_parallel)
        # the shuffle's map side coalesces up to 1 GiB of input by default: cap it at a partition's size
        ctx.shuffle_input_batch_bytes = TARGET_PARTITION_BYTES
        return ds.map_batches(
            _wave_rows, batch_size=1, batch_format="numpy", compute=ray.data.TaskPoolStrategy(size=num_parallel),
            fn_kwargs={"key_columns": key_columns, "wave": wave, "num_waves": num_waves, "removed_ref": removed_ref})

    return wave_rows


def exact_duplicates(stage_files: list[str], num_rows: int, num_parallel: int, requested_partitions: int = 0,
                     wave_bytes: int = 0) -> np.ndarray:
    """Sorted doc keys of the exact duplicates (a text hash an earlier document has), shuffled on the hash."""
    rows = _wave_dataset(stage_files, ["hash"], num_parallel)
    removed = [m for m, _ in _wave_pairs(rows, num_rows, num_parallel, requested_partitions, wave_bytes)]
    return np.unique(np.concatenate([np.empty(0, np.int64), *removed]))


def near_duplicates(stage_files: list[str], num_bands: int, exact_removed: np.ndarray, num_rows: int,
                    num_parallel: int, requested_partitions: int = 0, wave_bytes: int = 0) -> np.ndarray:
    """Sorted doc keys of the near duplicates among the `num_rows` documents minus `exact_removed`:
    every member of a near-duplicate cluster but its first. The clusters are folded wave by wave:
    the forest of one (document, root) edge per colliding document so far plus the new wave's edges
    have the same components as all edges, so the driver never holds more than one wave's edges."""
    import ray

    band_columns = [f"band_{k:02d}" for k in range(num_bands)]
    rows = _wave_dataset(stage_files, band_columns, num_parallel, ray.put(exact_removed))
    num_keys = (num_rows - len(exact_removed)) * num_bands
    nodes = roots = np.empty(0, np.int64)
    for u, v in _wave_pairs(rows, num_keys, num_parallel, requested_partitions, wave_bytes):
        nodes, roots = connected_components(np.concatenate([nodes, u]), np.concatenate([roots, v]))
    return nodes[nodes != roots]
