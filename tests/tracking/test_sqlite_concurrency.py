"""Several kopretrain processes writing to one local SQLite MLflow store at once lose nothing.

Real processes, a real store: each writer is `python -c WRITER` (kopretrain's `start_run` and
tracker, as a sweep point's driver uses them). Without kopretrain's lock around store creation,
writers that open a missing store at the same moment run MLflow's migrations twice and crash
(`duplicate column name: step`); a writer blocked past MLflow's 20 s busy timeout gets
`database is locked`, which kopretrain retries with backoff and a warning.

    .venv/bin/python -m pytest tests/tracking/test_sqlite_concurrency.py -q
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kopretrain.tracking_sqlite import filesystem_type, is_network_fs

REPO = Path(__file__).resolve().parents[2]
WRITER = """
import sys, pathlib, time
from kopretrain.config.common import TrackingConfig
from kopretrain.tracking import start_run
uri, name, num_steps, gate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
tracker = start_run(TrackingConfig(uri=uri, experiment_name="sweep"), run_name=name, config={"point": name})
tracker.log_metrics({"loss": 1.0, "lr": 1e-5, "tokens": 512}, step=1)
if gate:  # tell the test the run exists, then wait for its go
    pathlib.Path(gate + ".ready").touch()
    while not pathlib.Path(gate + ".go").exists():
        time.sleep(0.05)
for step in range(2, num_steps + 1):
    tracker.log_metrics({"loss": 1.0 / step, "lr": step * 1e-5, "tokens": step * 512}, step=step)
tracker.end()
print(tracker.run_id)
"""


def start_writer(store: Path, name: str, num_steps: int, cwd: Path, gate: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-c", WRITER, f"sqlite:///{store}", name, str(num_steps), gate],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_store(store: Path, run_ids: list[str], num_steps: int) -> None:
    """Every run FINISHED with its complete history of every metric; the file passes integrity_check."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["point"] == run.info.run_name
        for key, value in {"loss": lambda s: 1.0 / s, "lr": lambda s: s * 1e-5, "tokens": lambda s: s * 512}.items():
            history = {m.step: m.value for m in client.get_metric_history(run_id, key)}
            assert history == {s: pytest.approx(value(s)) for s in range(1, num_steps + 1)}, (run_id, key)
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM metrics").fetchone() == (3 * num_steps * len(run_ids),)


def test_four_writers_create_and_fill_one_new_store_at_once(tmp_path):
    """Four sweep points start together on a store that does not exist yet; 4 x 200 steps x 3 metrics."""
    store, num_steps = tmp_path / "mlflow.db", 200
    procs = [start_writer(store, f"point{i}", num_steps, tmp_path) for i in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        assert "kopretrain: warning" not in err, err[-2000:]
    check_store(store, [out.strip().splitlines()[-1] for out, _ in outs], num_steps)


@pytest.mark.slow
def test_a_write_blocked_past_mlflows_busy_timeout_is_retried_not_lost(tmp_path):
    """Another connection holds the store's write lock for 25 s (MLflow waits 20 s): the writer
    warns that the store is busy, retries, and every metric is there in the end."""
    store, num_steps = tmp_path / "mlflow.db", 20
    gate = str(tmp_path / "gate")
    proc = start_writer(store, "blocked", num_steps, tmp_path, gate)
    while not Path(gate + ".ready").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    Path(gate + ".go").touch()
    time.sleep(25)
    holder.execute("COMMIT")
    holder.close()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "kopretrain: warning: MLflow store busy for run" in err and "database is locked" in err, err[-2000:]
    assert "could not log metrics" not in err
    check_store(store, [out.strip().splitlines()[-1]], num_steps)


MOUNTS = """sysfs /sys sysfs rw 0 0
/dev/sda1 / ext4 rw,relatime 0 0
fs.example:/export /mnt/data nfs4 rw,vers=4.1 0 0
tmpfs /mnt/data/scratch tmpfs rw 0 0
s3fs /mnt/my\\040bucket fuse.s3fs rw 0 0
"""


@pytest.mark.parametrize("path,fstype,network", [
    ("/home/me/mlflow.db", "ext4", False),
    ("/mnt/data/mlflow.db", "nfs4", True),
    ("/mnt/data/scratch/mlflow.db", "tmpfs", False),  # the longest mount point wins
    ("/mnt/database/mlflow.db", "ext4", False),       # /mnt/data is not a prefix of /mnt/database
    ("/mnt/my bucket/mlflow.db", "fuse.s3fs", True),
])
def test_network_filesystems_are_recognized(path, fstype, network):
    assert filesystem_type(Path(path), MOUNTS) == fstype
    assert is_network_fs(fstype) is network
