"""Starting or joining Ray, in one place (glue: only command modules call this).

- `ray job submit` sets RAY_ADDRESS, so a job joins the cluster it was submitted to.
- `ray.address=...` joins a given cluster.
- Otherwise a private local instance is started (`address="local"`: never silently joins a
  cluster that happens to run on this machine). Its logical CPU count is raised above the
  core count, because on small machines Train workers holding a CPU each would starve the
  Ray Data tasks that feed them. It runs without the dashboard (lighter, faster to start), so
  Ray's state API is absent there: Ray Train's PlacementGroupCleaner would warn once a second
  for the whole run that it cannot query it. Workers of such an instance (and of commands the
  demo runs against it, which inherit NO_DASHBOARD_ENV) drop that one message and nothing else.
"""

from __future__ import annotations

import os

from kopretrain.config.common import RayConfig


NO_DASHBOARD_ENV = "KOPRETRAIN_RAY_NO_DASHBOARD"
_STATE_API_NOISE = "Failed to query Ray Train Controller actor state"
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


class _DropStateApiNoise:
    """logging filter: drops the cleaner's 'state API unavailable' warning (no dashboard here)."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(_STATE_API_NOISE)


def quiet_worker_logs() -> None:
    """Ray `worker_process_setup_hook` of instances without a dashboard."""
    import logging

    logging.getLogger(_CLEANER_LOGGER).addFilter(_DropStateApiNoise())


def default_local_cpus() -> int:
    return max(8, 2 * (os.cpu_count() or 1))


def init_ray(cfg: RayConfig) -> dict:
    """Connect to (or start) Ray once per process; returns a short description for reports."""
    import ray

    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
        if not address or os.environ.get(NO_DASHBOARD_ENV) == address:
            kwargs["runtime_env"] = {"worker_process_setup_hook": f"{__name__}.quiet_worker_logs"}
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
            os.environ[NO_DASHBOARD_ENV] = ray.get_runtime_context().gcs_address  # for subprocesses joining it
    ctx = ray.get_runtime_context()
    return {"gcs_address": ctx.gcs_address, "resources": ray.cluster_resources()}


def shutdown_ray() -> None:
    """Disconnect (and stop a local instance) if this process started or joined Ray."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    os.environ.pop(NO_DASHBOARD_ENV, None)
