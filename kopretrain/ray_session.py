"""Starting or joining Ray, in one place (glue: only command modules call this).

- `ray job submit` sets RAY_ADDRESS, so a job joins the cluster it was submitted to.
- `ray.address=...` joins a given cluster.
- Otherwise a private local instance is started (`address="local"`: never silently joins a
  cluster that happens to run on this machine). Its logical CPU count is raised above the
  core count, because on small machines Train workers holding a CPU each would starve the
  Ray Data tasks that feed them.
"""

from __future__ import annotations

import os

from kopretrain.config.common import RayConfig


def default_local_cpus() -> int:
    return max(8, 2 * (os.cpu_count() or 1))


def init_ray(cfg: RayConfig) -> dict:
    """Connect to (or start) Ray once per process; returns a short description for reports."""
    import ray

    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(
                address="local",
                num_cpus=cfg.num_cpus or default_local_cpus(),
                object_store_memory=cfg.object_store_memory_bytes,
                include_dashboard=False,
                **kwargs,
            )
    ctx = ray.get_runtime_context()
    return {"gcs_address": ctx.gcs_address, "resources": ray.cluster_resources()}


def shutdown_ray() -> None:
    """Disconnect (and stop a local instance) if this process started or joined Ray."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
