"""Config pieces shared by every command: Ray connection, MLflow tracking, validation helpers."""

from __future__ import annotations

import os
import posixpath
import re
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
    verbose: bool = False
    """Show Ray's INFO logs and all worker output on the console (always in <run dir>/logs/ray.log)."""

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
    uri: str = field(default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI", "").strip() or "sqlite:///mlflow.db")
    """Tracking URI: a local store (relative paths resolve against the launch directory) or http(s)://server; default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    experiment_name: str = "kopretrain"
    """MLflow experiment that runs are filed under."""
    run_name: str = ""
    """Run name ('' = the command and the run directory's name)."""
    parent_run_id: str = ""
    """Nest the run under this MLflow run (the demo's parent run, a sweep's parent)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Extra tags for the run."""

    def __post_init__(self):
        # What MLflow refuses, before any work (the store-dependent checks: kopretrain.tracking.check_tracking).
        if not self.enabled:
            return
        require(bool(self.uri.strip()), "uri", "must not be empty (e.g. sqlite:///mlflow.db or http://host:5000)")
        require(bool(self.experiment_name.strip()), "experiment_name", "must not be empty")
        require(len(self.experiment_name) <= 256, "experiment_name",
                f"is {len(self.experiment_name)} characters; MLflow's stores keep at most 256")
        require(len(self.run_name) <= 250, "run_name", f"is {len(self.run_name)} characters; MLflow keeps at most 250")
        require(not self.parent_run_id or _RUN_ID.fullmatch(self.parent_run_id) is not None, "parent_run_id",
                f"{self.parent_run_id!r} is not an MLflow run id (letters, digits, _ and -, e.g. 3f9c...)")
        for key, value in self.tags.items():
            key = str(key)
            require(_valid_mlflow_key(key), "tags", f"tag name {key!r} is refused by MLflow (at most 250 letters, "
                    "digits, _ - . space / :, not a path like /x or a//b)")
            require(len(str(value)) <= 8000, "tags", f"the value of tag {key!r} is {len(str(value))} characters; MLflow keeps at most 8000")


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,255}")


def _valid_mlflow_key(key: str) -> bool:
    """MLflow's rule for param, metric and tag names (kopretrain.tracking.metric_name maps other names)."""
    norm = posixpath.normpath(key)
    return (0 < len(key) <= 250 and re.fullmatch(r"[\w./ :-]*", key) is not None
            and norm == key and norm != "." and not norm.startswith(("..", "/")))
