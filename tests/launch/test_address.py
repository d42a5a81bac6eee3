"""`hydra.launcher.address` wins over $RAY_ADDRESS (kopretrain/launch/ray_jobs.py `_explicit_address`):
Ray's clients prefer the environment variable over the address they are given, so the launcher sets it
to the explicit address while it talks to the cluster. Checked without a cluster: two dead ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from kopretrain.launch.ray_jobs import _explicit_address


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on once it is closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_the_explicit_address_is_rays_for_the_launch_and_the_environment_is_restored(monkeypatch):
    from ray.util.state import list_nodes

    env_url, explicit = _dead_url(), _dead_url()
    monkeypatch.setenv("RAY_ADDRESS", env_url)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", env_url)
    with _explicit_address(explicit):
        assert os.environ["RAY_ADDRESS"] == explicit and "RAY_API_SERVER_ADDRESS" not in os.environ
        with pytest.raises(Exception) as caught:  # the fit check's cluster read goes to the explicit address
            list_nodes(address=explicit, limit=10, raise_on_missing_output=False)
        assert explicit in str(caught.value) and env_url not in str(caught.value)
    assert os.environ["RAY_ADDRESS"] == env_url and os.environ["RAY_API_SERVER_ADDRESS"] == env_url
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    with _explicit_address(""):  # no explicit address: $RAY_ADDRESS as it is
        assert os.environ["RAY_ADDRESS"] == env_url
    assert "RAY_API_SERVER_ADDRESS" not in os.environ


def test_an_explicit_dead_address_is_named_although_ray_address_is_set(tmp_path):
    env_url, explicit = _dead_url(), _dead_url()
    env = {**os.environ, "RAY_ADDRESS": env_url}
    out = subprocess.run([sys.executable, "-m", "kopretrain", "eval", "-m", "experiment=smoke", "max_docs_per_domain=2,3",
                          "hydra/launcher=ray_jobs", f"hydra.launcher.address={explicit}", "tracking.enabled=false",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"kopretrain eval: error: hydra.launcher.address: cannot reach the Ray Jobs API at {explicit} (")
    assert env_url not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
