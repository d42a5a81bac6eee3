"""Start and stop long-running servers in tests (a `ray start --head --block`, an `mlflow server`)
so that nothing outlives the test, whether it passes or fails.

A server is started in its own session (its own process group) with its output going to a log
file. Stopping it sends SIGTERM to the group, waits a grace period, then SIGKILLs the group and
every process that descended from the leader. The descendants are snapshotted first because
some children leave the group: Ray's worker processes (`ray::IDLE`) call setsid, so a group
kill alone would miss them.

    proc = start_server(["mlflow", "server", ...], log=tmp / "mlflow.log", env=env)
    try:
        wait_until(lambda: http_ok(url), proc, timeout_s=60, what="mlflow server")
        ...
    finally:
        stop_server(proc)

Run the tests that use it: `.venv/bin/python -m pytest tests/cluster tests/tracking -q`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import psutil


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports that are free right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_server(cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """Popen `cmd` as the leader of a new process group, stdout+stderr into `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, timeout_s: float, what: str, log: Path | None = None) -> None:
    """Poll `ready()` until true; fail early (with the log's tail) if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready{_tail(log)}")
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s{_tail(log)}")


def http_status(url: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0) -> int:
    """The HTTP status of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def stop_server(proc: subprocess.Popen, grace_s: float = 10.0) -> list[int]:
    """Stop `proc`, its process group and all its descendants; returns pids still alive (should be [])."""
    try:
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [proc.pid]
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    survivors = []
    for pid in family:
        try:
            p = psutil.Process(pid)
            p.kill()
            survivors.append(p)
        except psutil.NoSuchProcess:
            continue
    if proc.poll() is None:
        proc.wait(timeout=grace_s)
    _, alive = psutil.wait_procs(survivors, timeout=grace_s)
    return [p.pid for p in alive if _running(p)]


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _tail(log: Path | None, num_chars: int = 3000) -> str:
    if log is None or not log.exists():
        return ""
    return "\n--- " + str(log) + " (tail) ---\n" + log.read_text(errors="replace")[-num_chars:]
