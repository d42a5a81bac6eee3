"""Several kopretrain processes on one local SQLite MLflow store (a local sweep with concurrent points).

What MLflow 3.17 does on its own: every session sets `PRAGMA busy_timeout = 20000`, so a writer
waits up to 20 s for another one's lock instead of failing. What it does not do: a store is
created (its tables made and migrated by Alembic) by whichever process opens the file first, and
two processes opening a missing store at once run the migrations twice; all but one fail
(`duplicate column name`, `Online migration expected to match one row`). And a writer that waits
longer than 20 s gets `database is locked`.

So kopretrain
- creates or opens a `sqlite:///` store under an exclusive lock on `<store>.lock` next to it
  (`prepare_store`; once per store and process), so exactly one process migrates a new store;
- retries a write that failed with `database is locked` / `database is busy` with backoff
  (`retry_busy`: 1, 2, 4, 8, 16 s), warning once per run and kind of call; a write that fails
  after every retry is the tracker's warning (`MLflow could not log metrics ...`), never silent;
- warns once when the store is on a network filesystem (NFS, CIFS, CephFS, FUSE...), where
  SQLite's locks are not reliable: concurrent runs there need a tracking server (cluster/mlflow).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)  # waits between attempts after MLflow's own 20 s busy timeout
BUSY_MARKERS = ("database is locked", "database is busy")
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "9p", "afs",
              "beegfs", "virtiofs", "efs"}
_READY: set[str] = set()  # stores this process has opened under the lock
_WARNED: set[str] = set()


def _warn(message: str) -> None:
    print(f"kopretrain: warning: {message}", file=sys.stderr, flush=True)


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` store URI (None for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """The type of the filesystem `path` is on, from /proc/mounts (the longest mount point above it)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return ""
    target, best, fstype = os.path.abspath(path), "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, fields[2]
    return fstype


def is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS or fstype.startswith("fuse")


def prepare_store(uri: str) -> str:
    """Create or open the SQLite store at `uri` while holding `<store>.lock` (other URIs: nothing); returns `uri`."""
    path = sqlite_path(uri)
    if path is None or uri in _READY:
        return uri
    from mlflow.tracking._tracking_service.utils import _get_store

    path.parent.mkdir(parents=True, exist_ok=True)
    fstype = filesystem_type(path.parent)
    if is_network_fs(fstype) and uri not in _WARNED:
        _WARNED.add(uri)
        _warn(f"tracking.uri: the SQLite store {path} is on a network filesystem ({fstype}); SQLite is not safe "
              "there for runs that write at once: use a tracking server (README: Tracking on a cluster)")
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _get_store(uri)  # MLflow caches it per URI: the tracker's client reuses this one
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(uri)
    return uri


def is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in BUSY_MARKERS)


def retry_busy(fn, tracker, *args, **kwargs):
    """`fn(tracker, ...)`, again after each wait in BACKOFF_S while it fails with a busy store.

    A failed SQLite write is rolled back as a whole, so trying it again cannot log twice."""
    for attempt, wait_s in enumerate((*BACKOFF_S, None)):
        try:
            return fn(tracker, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only a busy store is retried
            if wait_s is None or not is_busy(exc):
                raise
            key = f"busy:{fn.__name__}"
            if key not in tracker.failed:
                tracker.failed.add(key)
                _warn(f"MLflow store busy for run {tracker.run_id} ({fn.__name__}: {str(exc).splitlines()[0][:160]}); "
                      f"retrying up to {len(BACKOFF_S)} times. For runs that write at once use a tracking server "
                      "(README: Tracking on a cluster)")
            time.sleep(wait_s)
