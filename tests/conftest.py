"""Shared fixtures. Tests build tiny models, tokenizers and corpora in-process and download
nothing; Ray tests share one real local Ray instance per test session (`ray_local`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Keep Ray and tokenizers quiet and deterministic in tests.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not present")
    return SHARED


def _start_local_ray() -> dict:
    from kopretrain.config.common import RayConfig
    from kopretrain.ray_session import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    return init_ray(RayConfig(num_cpus=8, object_store_memory_bytes=512 * 1024**2))


@pytest.fixture(scope="session")
def _ray_session():
    """Shuts down whatever Ray instance the session ends with."""
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_local(_ray_session):
    """A real local Ray instance shared by the session (8 logical CPUs on any machine, so 2 Train
    workers and Ray Data tasks fit together on a 2-core CI box). Checked per module: an in-process
    CLI test ends with `shutdown_ray()` (as the CLI does), and a Ray API called after that
    auto-starts a default 2-CPU instance, so a module that needs the instance starts it again."""
    import ray

    from kopretrain.ray_session import NO_DASHBOARD_ENV

    if ray.is_initialized() and os.environ.get(NO_DASHBOARD_ENV) != ray.get_runtime_context().gcs_address:
        ray.shutdown()  # not ours (auto-started by a Ray API, or another cluster)
    if ray.is_initialized() and ray.cluster_resources().get("CPU", 0) >= 8:
        return {"gcs_address": ray.get_runtime_context().gcs_address, "resources": ray.cluster_resources()}
    ray.shutdown()
    return _start_local_ray()
