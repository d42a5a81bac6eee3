"""The MLflow tracking server of cluster/mlflow on a real PostgreSQL, and a concurrent sweep on it.

A module fixture starts a throwaway PostgreSQL (initdb + pg_ctl in a temporary directory, on a
free local port; as the `postgres` user when the tests run as root, since PostgreSQL refuses to
run as root) and stops it afterwards. Against it, the commands of cluster/mlflow/server.yaml run
as written there: the init container's `mlflow db upgrade`, then `mlflow server` with the
Deployment's arguments (only the listen address, the port, the worker count and /mnt/data are
adapted to this machine). Skips, saying why, where PostgreSQL is not installed.

- three `kopretrain train experiment=smoke` started at once (a sweep whose points run
  concurrently) all finish, and every run holds its complete per-step metric history and its
  report.json artifact;
- the server's host check lets in the Service's name and refuses others (the --allowed-hosts of
  the manifest);
- the backup CronJob's script dumps the database, and the README's pg_restore brings it back.

    .venv/bin/python -m pytest tests/tracking/test_postgres.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.cluster.processes import free_ports, http_status, start_server, stop_server, wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_DIRS = [os.environ.get("PG_BIN", ""), *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)]


def pg_bin(tool: str) -> str | None:
    return shutil.which(tool) or next((str(Path(d) / tool) for d in PG_DIRS if d and (Path(d) / tool).exists()), None)


def as_pg_user(cmd: list[str]) -> list[str]:
    """PostgreSQL's server programs refuse root: run them as `postgres` then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def manifest(kind: str, name: str) -> dict:
    for path in sorted((REPO / "cluster" / "mlflow").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind} {name} in cluster/mlflow")


def pod_containers(doc: dict) -> dict[str, dict]:
    spec = (doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"])["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return {**env, **extra}


@pytest.fixture(scope="module")
def postgres():
    """A running PostgreSQL with a database `mlflow` owned by the role `mlflow`: yields its URL."""
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)")
    root = Path(tempfile.mkdtemp(prefix="kopretrain-pg-"))  # not under pytest's 0700 tmp: the postgres user must reach it
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, (port,) = root / "data", free_ports(1)
    run = lambda cmd: subprocess.run(as_pg_user(cmd), check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        run([pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        run([pg_bin("pg_ctl"), "start", "-w", "-D", str(data), "-l", str(root / "postgres.log"),
             "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1"])
        try:
            psql = [pg_bin("psql"), "-h", str(root), "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
            run([*psql, "-c", "CREATE ROLE mlflow LOGIN PASSWORD 'secret'", "-c", "CREATE DATABASE mlflow OWNER mlflow"])
            yield f"postgresql://mlflow:secret@127.0.0.1:{port}/mlflow"
        finally:
            run([pg_bin("pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(data)])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """cluster/mlflow/server.yaml's containers, run here: (url, artifacts dir)."""
    root = tmp_path_factory.mktemp("mlflow-pg")
    containers = pod_containers(manifest("Deployment", "mlflow"))
    env = clean_env(MLFLOW_BACKEND_STORE_URI=postgres,
                    **{e["name"]: e["value"] for c in containers.values() for e in c["env"] if "value" in e})
    upgrade = subprocess.run(containers["db-upgrade"]["command"], env=env, capture_output=True, text=True, timeout=300)
    assert upgrade.returncode == 0, upgrade.stderr[-3000:]

    (port,) = free_ports(1)
    adapted = {"--host=0.0.0.0": "--host=127.0.0.1", "--port=5000": f"--port={port}", "--workers=4": "--workers=2"}
    server = containers["mlflow"]
    args = [adapted.get(a, a).replace("/mnt/data", str(root)) for a in server["args"]]
    assert len(set(adapted.values()) & set(args)) == 3, "the manifest's arguments changed: adapt this test"
    cmd = [str(VENV_BIN / server["command"][0]), *server["command"][1:], *args]
    proc = start_server(cmd, root / "server.log", env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/health") == 200, proc, 180, "mlflow server", root / "server.log")
        yield url, root / "mlflow" / "artifacts"
    finally:
        assert stop_server(proc) == []


def test_server_answers_its_service_name_and_refuses_other_hosts(mlflow_server):
    url, _ = mlflow_server
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(search) == 200  # Host: 127.0.0.1:<port>, as through kubectl port-forward
    assert http_status(search, {"Host": "mlflow:5000"}) == 200
    assert http_status(search, {"Host": "mlflow.ml.svc.cluster.local:5000"}) == 200
    assert http_status(search, {"Host": "evil.example.com"}) == 403


@pytest.mark.slow
@pytest.mark.ray
def test_three_trains_at_once_each_keep_every_metric_and_their_report(mlflow_server, tmp_path):
    """A sweep's points as concurrent processes (each with its own local Ray instance) on one server."""
    from mlflow.tracking import MlflowClient

    url, artifacts_dir = mlflow_server
    procs = {}
    for i in range(3):
        home = tmp_path / f"home{i}"
        home.mkdir()
        cmd = [sys.executable, "-m", "kopretrain", "train", "experiment=smoke", f"tracking.uri={url}",
               "tracking.experiment_name=sweep-pg", f"tracking.run_name=point{i}", f"optim.lr={(i + 1) * 1e-3}",
               f"hydra.run.dir={tmp_path / f'run{i}'}", "scale.num_workers=1", "strategy=ddp", "ray.num_cpus=2",
               f"ray.object_store_memory_bytes={100 * 1024**2}"]
        procs[i] = subprocess.Popen(cmd, cwd=home, env=clean_env(HOME=str(home)), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    outs = {i: p.communicate(timeout=900) for i, p in procs.items()}
    for i, p in procs.items():
        assert p.returncode == 0, outs[i][1][-3000:]
        assert "kopretrain: warning" not in outs[i][1], outs[i][1][-2000:]

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("sweep-pg")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["point0", "point1", "point2"]
    for i in range(3):
        report = json.loads((tmp_path / f"run{i}" / "report.json").read_text())
        run = runs[f"point{i}"]
        assert run.info.run_id == report["mlflow_run_id"] and run.info.status == "FINISHED"
        assert float(run.data.params["optim.lr"]) == pytest.approx((i + 1) * 1e-3)
        losses = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}
        assert losses == {r["step"]: pytest.approx(r["loss"]) for r in report["losses"]}
        assert sorted(losses) == list(range(1, 7))  # conf/experiment/train/smoke.yaml: num_steps 6
        for key in ("lr", "grad_norm"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(1, 7)), key
        logged = json.loads(Path(client.download_artifacts(run.info.run_id, "report.json", str(tmp_path / f"dl{i}"))).read_text())
        assert logged == report
    assert len(list(artifacts_dir.rglob("report.json"))) == 3  # in the server's artifact store on the "volume"


def test_backup_cronjob_dumps_the_database_and_the_readme_restore_brings_it_back(mlflow_server, postgres, tmp_path):
    from mlflow.tracking import MlflowClient

    if pg_bin("pg_dump") is None or pg_bin("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore are not installed")
    url, _ = mlflow_server
    client = MlflowClient(tracking_uri=url)
    run_id = client.create_run(client.create_experiment("backup-test")).info.run_id
    for step in range(1, 4):
        client.log_metric(run_id, "loss", 1.0 / step, step=step)

    job = pod_containers(manifest("CronJob", "mlflow-backup"))["pg-dump"]
    env = clean_env(**{e["name"]: e["value"] for e in job["env"] if "value" in e})
    env.update(MLFLOW_BACKEND_STORE_URI=postgres.replace("postgresql://", "postgresql+psycopg://"),  # the driver prefix is dropped
               BACKUP_DIR=str(tmp_path / "backups"),
               PATH=f"{Path(pg_bin('pg_dump')).parent}:{env['PATH']}")
    (tmp_path / "backups").mkdir()
    old = tmp_path / "backups" / "mlflow-20000101T000000Z.dump"
    old.write_bytes(b"old")
    os.utime(old, (946684800, 946684800))  # 2000-01-01: older than KEEP_DAYS
    out = subprocess.run(job["command"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    dump = Path(out.stdout.strip().splitlines()[-1])
    assert dump.parent == tmp_path / "backups" and dump.stat().st_size > 0
    assert sorted(p.name for p in dump.parent.iterdir()) == [dump.name]  # the old one pruned, no .partial left

    # The README's restore: pg_restore --clean --if-exists --no-owner into an (emptied) database.
    admin = postgres.replace("mlflow:secret@", "postgres@").rsplit("/", 1)[0]
    subprocess.run([pg_bin("psql"), f"{admin}/postgres", "-c", "CREATE DATABASE restored OWNER mlflow"], check=True,
                   capture_output=True, timeout=60)
    restore = subprocess.run([pg_bin("pg_restore"), "--clean", "--if-exists", "--no-owner",
                              "-d", postgres.rsplit("/", 1)[0] + "/restored", str(dump)], capture_output=True, text=True, timeout=300)
    assert restore.returncode == 0, restore.stderr[-3000:]
    restored = MlflowClient(tracking_uri=postgres.rsplit("/", 1)[0] + "/restored")
    assert [(m.step, m.value) for m in restored.get_metric_history(run_id, "loss")] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
