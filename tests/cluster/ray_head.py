"""A real single-node Ray cluster for tests: `ray start --head --block` with token authentication.

Everything it uses is private to the test, so nothing else in the test session can join it by
accident and it cannot collide with another Ray instance on the machine:
- HOME is a temporary directory: `ray get-auth-token --generate` writes the token to
  `$HOME/.ray/auth_token`, where the `ray` CLI (and the job driver, which inherits the head's
  environment) read it.
- `--temp-dir` is a fresh short directory under /tmp (Unix socket paths must stay under ~107
  bytes, which pytest's tmp_path does not guarantee); the cluster's address file
  (`ray_current_cluster`) goes there, not into /tmp/ray, so `ray.init("auto")` elsewhere won't find it.
- every port Ray would otherwise take at a fixed default (GCS 6379, dashboard 8265, client
  server 10001, dashboard agent 52365) is a free port chosen at start.
- RAY_* variables of the calling environment (RAY_ADDRESS above all) are not passed on.

    head = start_ray_head(num_cpus=8)
    try:
        head.ray("job", "submit", "--address", head.dashboard_url, "--", "kopretrain", ...)
    finally:
        stop_ray_head(head)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.processes import free_ports, http_status, start_server, stop_server, wait_until

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


@dataclass
class RayHead:
    proc: subprocess.Popen
    root: Path
    """Private directory: home/ (HOME, with .ray/auth_token), ray/ (--temp-dir), head.log."""
    env: dict[str, str]
    """Environment of the head and of CLI calls that should authenticate."""
    gcs_port: int
    dashboard_port: int

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def token(self) -> str:
        return (Path(self.env["HOME"]) / ".ray" / "auth_token").read_text().strip()

    @property
    def log(self) -> Path:
        return self.root / "head.log"

    def ray(self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """Run the `ray` CLI (with this cluster's token unless `env` says otherwise)."""
        return subprocess.run(
            [RAY, *args], env=env or self.env, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )


def clean_env(home: Path) -> dict[str, str]:
    """The calling environment minus RAY_*, with HOME replaced and the venv's bin first on PATH
    (so the job's entrypoint `kopretrain` resolves to this checkout's console script)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=str(home),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_ray_head(num_cpus: int = 8, object_store_bytes: int = 512 * 1024**2, timeout_s: float = 120) -> RayHead:
    root = Path(tempfile.mkdtemp(prefix="kr-ray-", dir="/tmp"))
    home = root / "home"
    home.mkdir()
    env = clean_env(home)
    env["RAY_AUTH_MODE"] = "token"
    gen = subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0 and (home / ".ray" / "auth_token").exists(), gen.stderr
    gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics = free_ports(7)
    cmd = [
        RAY, "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1", "--port", str(gcs),
        # Logical CPUs, not cores: two Train workers plus Ray Data tasks must fit on a 2-core box.
        "--num-cpus", str(num_cpus), "--object-store-memory", str(object_store_bytes),
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--ray-client-server-port", str(client),
        "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env), "--metrics-export-port", str(metrics),
        "--temp-dir", str(root / "ray"),
    ]
    head = RayHead(start_server(cmd, root / "head.log", env), root, env, gcs, dashboard)
    try:
        # The job API answering an authenticated request means the dashboard's job module is up.
        auth = {"Authorization": f"Bearer {head.token}"}
        wait_until(
            lambda: http_status(f"{head.dashboard_url}/api/jobs/", auth) == 200,
            head.proc, timeout_s, "ray start --head", head.log,
        )
    except BaseException:
        stop_ray_head(head)
        raise
    return head


def stop_ray_head(head: RayHead, keep_log_in: Path | None = None) -> list[int]:
    """Stop the head and everything it started, delete its directory (after copying head.log to
    `keep_log_in`, if given); returns the pids that survived (should be [])."""
    survivors = stop_server(head.proc, grace_s=5.0)  # `ray start --block` often ignores SIGTERM for longer
    if keep_log_in is not None and head.log.exists():
        shutil.copy(head.log, keep_log_in / "ray-head.log")
    shutil.rmtree(head.root, ignore_errors=True)
    return survivors
