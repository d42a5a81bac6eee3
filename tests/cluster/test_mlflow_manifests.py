"""cluster/mlflow/: the MLflow tracking server on PostgreSQL, checked offline.

Validity: every document against the Kubernetes API models of the official Python client
(tests/cluster/k8s_schema.py: field names, JSON types, required fields; strict like kubectl),
with deliberately broken copies as negative controls. Meaning: the server runs kopretrain's own
image with arguments `mlflow server` itself accepts (parsed by MLflow's CLI), its backend store
comes from the Secret that the README tells you to create (and nothing else holds a password),
its artifacts go to the shared volume, MLflow's own host check lets in the Service's names and
`kubectl port-forward` and nothing else, probes hit /health on the served port, Services select
their pods, and every Ray pod and RayJob entrypoint defaults `tracking.uri` to that Service.
tests/tracking/test_postgres.py runs these very commands against a real PostgreSQL.

    .venv/bin/python -m pytest tests/cluster/test_mlflow_manifests.py -q
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.cluster.k8s_schema import validate_core

REPO = Path(__file__).resolve().parents[2]
MLFLOW_DIR = REPO / "cluster" / "mlflow"
SERVICE_URI = "http://mlflow:5000"


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


ALL = [d for p in sorted(MLFLOW_DIR.glob("*.yaml")) for d in docs(p)]


def the(kind: str, name: str) -> dict:
    (found,) = [d for d in ALL if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod_spec(doc: dict) -> dict:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]["spec"]


def container(doc: dict, name: str) -> dict:
    (found,) = [c for c in pod_spec(doc).get("initContainers", []) + pod_spec(doc)["containers"] if c["name"] == name]
    return found


def env(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def ray_image() -> str:
    cluster = docs(REPO / "cluster" / "raycluster.yaml")[0]
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def server_args() -> list[str]:
    c = container(the("Deployment", "mlflow"), "mlflow")
    return c["command"][1:] + c["args"]


def secret_keys_in_readme() -> set[str]:
    """The keys of `kubectl create secret generic mlflow-db ...` in cluster/README.md (each time it is shown)."""
    text = (REPO / "cluster" / "README.md").read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if "kubectl create secret generic mlflow-db" in line]
    keys = {frozenset(re.findall(r"--from-literal=(\w+)=", command)) for command in commands}
    assert len(commands) >= 1 and len(keys) == 1, commands
    return set(next(iter(keys)))


# ------------------------------------------------------------------ validity
def test_the_server_the_database_and_the_backup_are_all_there():
    assert sorted((d["kind"], d["metadata"]["name"]) for d in ALL) == [
        ("CronJob", "mlflow-backup"), ("Deployment", "mlflow"), ("Service", "mlflow"),
        ("Service", "mlflow-postgres"), ("StatefulSet", "mlflow-postgres")]


@pytest.mark.parametrize("doc", ALL, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_document_is_valid_for_the_kubernetes_api(doc):
    assert validate_core(doc) == []


def test_the_shared_volume_claim_is_valid_too():
    assert validate_core(docs(REPO / "cluster" / "pvc.yaml")[0]) == []


BROKEN = {  # name -> (kind, name, how to break it, what the error must say)
    "typo in a field": ("Deployment", "mlflow", lambda d: d["spec"].update(replica=2), "unknown field 'replica'"),
    "string for an integer": ("StatefulSet", "mlflow-postgres", lambda d: d["spec"].update(replicas="one"), "is not of type integer"),
    "container without a name": ("Deployment", "mlflow", lambda d: pod_spec(d)["containers"][0].pop("name"), "`name`, must not be `None`"),
    "probe field misplaced": ("Deployment", "mlflow", lambda d: pod_spec(d)["containers"][0]["readinessProbe"].update(path="/health"), "unknown field 'path'"),
    "env as a map": ("CronJob", "mlflow-backup", lambda d: pod_spec(d)["containers"][0].update(env={"A": "b"}), "expected a list"),
    "secretKeyRef typo": ("Deployment", "mlflow", lambda d: pod_spec(d)["containers"][0]["env"][0]["valueFrom"].update(secretRef={}), "unknown field 'secretRef'"),
    "pod spec without containers": ("StatefulSet", "mlflow-postgres", lambda d: pod_spec(d).pop("containers"), "`containers`, must not be `None`"),
    "unknown kind": ("Service", "mlflow", lambda d: d.update(kind="Servce"), "unsupported kind"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_manifest_is_rejected(case):
    kind, name, breaks, expected = BROKEN[case]
    doc = copy.deepcopy(the(kind, name))
    breaks(doc)
    errors = validate_core(doc)
    assert any(expected in e for e in errors), errors


# ------------------------------------------------------------------ what they mean
def test_server_runs_kopretrains_image_with_arguments_mlflow_accepts():
    import mlflow.cli

    c = container(the("Deployment", "mlflow"), "mlflow")
    assert c["image"] == ray_image() == container(the("Deployment", "mlflow"), "db-upgrade")["image"]
    assert c["command"] == ["mlflow", "server"]
    ctx = mlflow.cli.server.make_context("server", list(c["args"]))  # MLflow's own parser and checks
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 5000
    assert ctx.params["serve_artifacts"] is True
    assert ctx.params["artifacts_destination"].startswith("/mnt/data/")
    assert ctx.params["backend_store_uri"] is None  # from the environment, so the password stays off the command line
    upgrade = shlex.split(container(the("Deployment", "mlflow"), "db-upgrade")["command"][2])
    assert upgrade[:4] == ["exec", "mlflow", "db", "upgrade"]


def test_allowed_hosts_admit_the_service_names_and_port_forward_only():
    from mlflow.server.security_utils import is_allowed_host_header

    (arg,) = [a for a in server_args() if a.startswith("--allowed-hosts=")]
    allowed = arg.split("=", 1)[1].split(",")
    for host in ["mlflow:5000", "mlflow", "mlflow.default.svc:5000", "mlflow.ml-team.svc.cluster.local:5000",
                 "localhost:5000", "127.0.0.1:5000"]:
        assert is_allowed_host_header(allowed, host), host
    for host in ["evil.example.com", "mlflow.evil.example.com:5000", "10.0.0.7:5000"]:
        assert not is_allowed_host_header(allowed, host), host


def test_every_secret_reference_is_created_by_the_readme_command_and_no_password_is_inline():
    refs = set()
    for doc in ALL:
        if doc["kind"] in ("Deployment", "StatefulSet", "CronJob"):
            for c in pod_spec(doc).get("initContainers", []) + pod_spec(doc)["containers"]:
                for e in c.get("env", []):
                    if "valueFrom" in e:
                        ref = e["valueFrom"]["secretKeyRef"]
                        refs.add((ref["name"], ref["key"]))
                    assert "PASSWORD" not in e["name"] or "valueFrom" in e, e
                    assert "://" not in e.get("value", ""), f"a URL with credentials belongs in the Secret: {e}"
    assert refs == {("mlflow-db", "uri"), ("mlflow-db", "password")}
    assert secret_keys_in_readme() == {"uri", "password"}
    for doc in ("Deployment", "mlflow"), ("CronJob", "mlflow-backup"):
        assert env(container(the(*doc), pod_spec(the(*doc))["containers"][0]["name"]))["MLFLOW_BACKEND_STORE_URI"] == \
            {"secretKeyRef": {"name": "mlflow-db", "key": "uri"}}


def test_readme_database_url_names_the_postgres_service_user_and_database():
    text = (REPO / "cluster" / "README.md").read_text()
    url = re.search(r'uri="(postgresql://[^"]+)"', text).group(1)
    m = re.fullmatch(r"postgresql://(\w+):\$PW@([\w-]+):(\d+)/(\w+)", url)
    assert m, url
    pg = container(the("StatefulSet", "mlflow-postgres"), "postgres")
    service = the("Service", "mlflow-postgres")
    assert (m.group(1), m.group(4)) == (env(pg)["POSTGRES_USER"], env(pg)["POSTGRES_DB"])
    assert m.group(2) == service["metadata"]["name"] and int(m.group(3)) == service["spec"]["ports"][0]["port"]
    assert env(pg)["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "mlflow-db", "key": "password"}}


@pytest.mark.parametrize("name", ["mlflow", "mlflow-postgres"])
def test_services_select_their_pods_on_named_ports_and_probes_check_them(name):
    service = the("Service", name)
    workload = the("Deployment" if name == "mlflow" else "StatefulSet", name)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    c = pod_spec(workload)["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    (sport,) = service["spec"]["ports"]
    assert sport["targetPort"] in ports
    for probe in ("readinessProbe", "livenessProbe"):
        check = c[probe]
        if "httpGet" in check:
            assert check["httpGet"] == {"path": "/health", "port": sport["targetPort"]}
        else:
            assert check["exec"]["command"][0] == "pg_isready"
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]


def test_postgres_keeps_its_data_on_its_own_volume():
    sts = the("StatefulSet", "mlflow-postgres")
    assert sts["spec"]["serviceName"] == "mlflow-postgres" and the("Service", "mlflow-postgres")["spec"]["clusterIP"] == "None"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    (mount,) = container(sts, "postgres")["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert env(container(sts, "postgres"))["PGDATA"].startswith(mount["mountPath"] + "/")


@pytest.mark.parametrize("kind,name", [("Deployment", "mlflow"), ("CronJob", "mlflow-backup")])
def test_artifacts_and_backups_are_on_the_shared_volume(kind, name):
    doc = the(kind, name)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod_spec(doc)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod_spec(doc)["containers"][0]["volumeMounts"]}
    assert claims[mounts["/mnt/data"]] == "kopretrain-data"


def test_images_are_pinned():
    for doc in ALL:
        if doc["kind"] in ("Deployment", "StatefulSet", "CronJob"):
            for c in pod_spec(doc).get("initContainers", []) + pod_spec(doc)["containers"]:
                assert re.fullmatch(r"[\w./-]+:[\w.-]+", c["image"]) and not c["image"].endswith(":latest"), c["image"]
    assert container(the("CronJob", "mlflow-backup"), "pg-dump")["image"] == container(the("StatefulSet", "mlflow-postgres"), "postgres")["image"]


def test_backup_runs_daily_one_at_a_time():
    cron = the("CronJob", "mlflow-backup")
    assert len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert "pg_dump --format=custom" in container(cron, "pg-dump")["command"][2]


def test_ray_pods_and_rayjob_entrypoints_default_tracking_to_the_service():
    service = the("Service", "mlflow")
    assert SERVICE_URI == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    for path in ("raycluster.yaml", "rayjob.yaml", "rayjob-prepare.yaml"):
        text = (REPO / "cluster" / path).read_text()
        assert "sqlite:" not in text, path
        for doc in docs(REPO / "cluster" / path):
            spec = doc["spec"].get("rayClusterSpec", doc["spec"])
            groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
            for c in (c for g in groups for c in g["template"]["spec"]["containers"]):
                assert env(c)["MLFLOW_TRACKING_URI"] == SERVICE_URI, (path, c["name"])
            if doc["kind"] == "RayJob":
                assert f"tracking.uri={SERVICE_URI}" in shlex.split(doc["spec"]["entrypoint"])


@pytest.mark.parametrize("environment,expected", [({"MLFLOW_TRACKING_URI": SERVICE_URI}, SERVICE_URI), ({}, "sqlite:///mlflow.db")])
def test_tracking_uri_defaults_to_mlflow_tracking_uri(environment, expected):
    """What the Ray pods' MLFLOW_TRACKING_URI does to a kopretrain command submitted without
    tracking.uri (a fresh process: the default is read when the command's schema is registered)."""
    import os
    import subprocess
    import sys

    code = ("from kopretrain.cli import compose_typed; "
            "print(compose_typed('train', ['experiment=smoke']).tracking.uri); "
            "print(compose_typed('train', ['experiment=smoke', 'tracking.uri=sqlite:///x.db']).tracking.uri)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **environment, "PYTHONPATH": str(REPO)},
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [expected, "sqlite:///x.db"]


def test_the_image_runs_the_server_with_the_postgresql_driver():
    """The Deployment runs kopretrain's image: its build installs psycopg and checks it imports."""
    assert re.search(r'^\s*"psycopg\[binary\]==[\d.]+",', (REPO / "pyproject.toml").read_text(), re.M)
    assert 'python -c "import psycopg"' in (REPO / "cluster" / "Dockerfile").read_text()
    import psycopg  # noqa: F401 - and the venv the tests run in has it
    import sqlalchemy

    assert sqlalchemy.create_engine("postgresql://u@h/db").dialect.driver == "psycopg"  # what postgresql:// URLs use
