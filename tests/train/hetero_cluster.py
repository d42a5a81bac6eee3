"""A simulated heterogeneous Ray cluster on one machine, and `kopretrain train` runs on it.

    python -m tests.train.hetero_cluster SPEC.json OUT.json

`start_cluster()` (ray.cluster_utils.Cluster) starts a head that takes no work and two worker
nodes labelled as the GPU groups of cluster/raycluster.yaml are (`ray.io/accelerator-type=A100`
and `=H100`, plus the custom resources `A100: 1` / `H100: 1`); on CPU both "groups" are the same
cores. The module's main runs the cases of SPEC.json ({"work_dir": ..., "cases": {name:
[override, ...]}}) one after another with `run_train` against that cluster and writes OUT.json
({name: {"report": report.json's dict} or {"error": the one-line UserError}}).

It is meant to run in its own process (`run_in_subprocess`), with a private HOME and Ray temp
dir, so it never meets the test session's own Ray instance (`ray_local`) nor anything else on
the machine: Cluster writes the address file `ray_current_cluster` into RAY_TMPDIR.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NODE_TYPES = ("A100", "H100")
LABEL = "ray.io/accelerator-type"


def start_cluster(cpus_per_node: int = 2):
    """Head (0 CPUs: no Train worker lands there) + one node per NODE_TYPES; returns the Cluster.

    The GCS port is chosen first and RAY_ADDRESS set before any node starts, so every Ray process
    of this cluster inherits it: Ray Train's PlacementGroupCleaner, which asks the state API
    without an address, then looks at this cluster, not at another Ray instance on the machine."""
    import ray
    from ray.cluster_utils import Cluster

    from tests.cluster.processes import free_ports

    port = free_ports(1)[0]
    os.environ["RAY_ADDRESS"] = f"{ray.util.get_node_ip_address()}:{port}"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, "gcs_server_port": port})
    assert cluster.address == os.environ["RAY_ADDRESS"], (cluster.address, os.environ["RAY_ADDRESS"])
    for kind in NODE_TYPES:
        cluster.add_node(num_cpus=cpus_per_node, labels={LABEL: kind}, resources={kind: 1},
                         object_store_memory=150 * 1024**2)
    cluster.wait_for_nodes()
    return cluster


def join(cluster) -> None:
    """Point kopretrain's init_ray (and its no-dashboard worker settings) at `cluster`."""
    from kopretrain.ray_session import NO_DASHBOARD_ENV

    os.environ["RAY_ADDRESS"] = cluster.address
    os.environ[NO_DASHBOARD_ENV] = cluster.address


def run_cases(cases: dict[str, list[str]], work_dir: Path) -> dict:
    from kopretrain.cli import compose_typed
    from kopretrain.errors import UserError
    from kopretrain.train.command import run_train

    out = {}
    for name, overrides in cases.items():
        try:
            cfg = compose_typed("train", ["experiment=smoke", "tracking.enabled=false", *overrides])
            out[name] = {"report": run_train(cfg, work_dir / name)}
        except UserError as exc:
            out[name] = {"error": str(exc)}
        print(f"hetero_cluster: {name}: {'ok' if 'report' in out[name] else out[name]['error']}", flush=True)
    return out


def private_env(root: Path) -> dict[str, str]:
    """This environment minus RAY_*, with HOME and Ray's temp dir under `root`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "KOPRETRAIN_RAY_NO_DASHBOARD"}
    (root / "home").mkdir(exist_ok=True)
    (root / "ray").mkdir(exist_ok=True)
    env.update(HOME=str(root / "home"), RAY_TMPDIR=str(root / "ray"), RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return env


def run_in_subprocess(cases: dict[str, list[str]], work_dir: Path, timeout_s: float = 1500) -> dict:
    """Run `cases` on a fresh simulated cluster in a child process; the cluster ends with it."""
    root = Path(tempfile.mkdtemp(prefix="kr-het-", dir="/tmp"))  # short: Ray's socket paths
    spec, out = work_dir / "spec.json", work_dir / "out.json"
    spec.write_text(json.dumps({"work_dir": str(work_dir), "cases": cases}))
    try:
        proc = subprocess.run([sys.executable, "-m", "tests.train.hetero_cluster", str(spec), str(out)], cwd=REPO,
                              env=private_env(root), capture_output=True, text=True, timeout=timeout_s)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # HOME and Ray's session dirs (the log is kept below)
    (work_dir / "cluster.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"the cluster run failed; log in {work_dir / 'cluster.log'}:\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text())


def main(spec_file: str, out_file: str) -> None:
    import ray

    spec = json.loads(Path(spec_file).read_text())
    cluster = start_cluster()
    try:
        join(cluster)
        results = run_cases(spec["cases"], Path(spec["work_dir"]))
    finally:
        ray.shutdown()
        cluster.shutdown()
    Path(out_file).write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:3])
