"""Config pieces shared by every command: Ray connection, MLflow tracking, validation helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from kopretrain.errors import ConfigError


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless `ok`. Used by every `__post_init__`."""
    if not ok:
        raise ConfigError(key, message)


def require_choice(value: Any, choices, key: str) -> None:
    require(value in choices, key, f"{value!r} is not one of {sorted(choices)}")


@dataclass
class RayConfig:
    """How to reach Ray. Under `ray job submit` RAY_ADDRESS is set and wins over a local start."""

    address: Optional[str] = None
    """Cluster address ("auto", "ray://host:10001", "host:6379"); None = $RAY_ADDRESS, else start a local instance."""
    num_cpus: Optional[int] = None
    """Logical CPUs of a local instance (None = max(8, 2 x cores): Train workers and Data tasks must not starve)."""
    object_store_memory_bytes: Optional[int] = None
    """Object store size of a local instance (None = Ray's default)."""

    def __post_init__(self):
        require(self.num_cpus is None or self.num_cpus >= 1, "num_cpus", "must be >= 1")
        require(
            self.object_store_memory_bytes is None or self.object_store_memory_bytes >= 78_643_200,
            "object_store_memory_bytes",
            "must be at least 75 MiB (Ray's minimum)",
        )


@dataclass
class TrackingConfig:
    """MLflow tracking. Logged from the driver and from rank 0 only."""

    enabled: bool = True
    """Log to MLflow at all (tests turn it off where it is not the subject)."""
    uri: str = "sqlite:///mlflow.db"
    """Tracking URI: a local store (relative paths resolve against the launch directory) or http(s)://server."""
    experiment_name: str = "kopretrain"
    """MLflow experiment that runs are filed under."""
    run_name: str = ""
    """Run name ('' = the command and the run directory's name)."""
    parent_run_id: str = ""
    """Nest the run under this MLflow run (the demo's parent run, a sweep's parent)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra tags for the run."""
