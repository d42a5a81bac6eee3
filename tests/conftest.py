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


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray instance for the whole session (8 logical CPUs on any machine, so
    2 Train workers and Ray Data tasks fit together on a 2-core CI box)."""
    import ray

    from kopretrain.config.common import RayConfig
    from kopretrain.ray_session import init_ray

    os.environ.pop("RAY_ADDRESS", None)
    info = init_ray(RayConfig(num_cpus=8, object_store_memory_bytes=512 * 1024**2))
    yield info
    ray.shutdown()
