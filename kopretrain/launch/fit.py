"""Whether a sweep's points fit the Ray cluster (`hydra.launcher.fit_check`, the ray_jobs launcher).

A point needs its driver's reservation (`hydra.launcher.entrypoint_num_cpus` / `_gpus` /
`_resources`) plus, for `train`, its Ray Train workers (`scale.num_workers` x what
`kopretrain.train.preflight.worker_resources` gives per worker; with `scale.groups` one shape for
all workers, as `train.command.scaling_config` reserves it). Before anything is submitted, a point
that needs more than the cluster has in all is refused (`refusal`), unless the cluster can add
nodes; then points are packed: the next point is submitted only when its needs fit beside the
needs of the points still running (`fits`). Only what the launcher submits is counted: jobs of
other users on the same cluster are not.

Pure (no Ray, Hydra or MLflow) except `read_cluster`, which asks the cluster's dashboard.

    needs = point_needs(params, scale)        # Needs(driver={"CPU": 1}, workers=2, per_worker={"CPU": 1})
    refusal(0, "replay_ratio=0", needs, {"CPU": 2.0})   # "#0 replay_ratio=0: needs 3 CPU (...), ..." or ""
"""

from __future__ import annotations

import json
import time
import types
from dataclasses import dataclass, field
from typing import Any

from kopretrain.launch.points import LaunchRefused

DRIVER_KEYS = {"CPU": "hydra.launcher.entrypoint_num_cpus", "GPU": "hydra.launcher.entrypoint_num_gpus"}


def check_params(params: dict[str, Any]) -> int:
    """The launcher's own numbers (one line each, exit 2); returns max_concurrent."""
    max_concurrent = params.get("max_concurrent", 4)
    if not isinstance(max_concurrent, int) or isinstance(max_concurrent, bool) or max_concurrent < 1:
        raise LaunchRefused(f"hydra.launcher.max_concurrent: must be an integer >= 1, got {max_concurrent}")
    for key in ("entrypoint_num_cpus", "entrypoint_num_gpus", "poll_interval_s"):
        if float(params.get(key) or 0) < 0:
            raise LaunchRefused(f"hydra.launcher.{key}: must be >= 0, got {params.get(key)}")
    for name, amount in dict(params.get("entrypoint_resources") or {}).items():
        if float(amount) < 0:
            raise LaunchRefused(f"hydra.launcher.entrypoint_resources.{name}: must be >= 0, got {amount}")
    return max_concurrent


@dataclass
class Needs:
    """What one point reserves on the cluster."""

    driver: dict[str, float] = field(default_factory=dict)
    """The driver's reservation (entrypoint_*)."""
    workers: int = 0
    """Ray Train workers (0 for commands without them)."""
    per_worker: dict[str, float] = field(default_factory=dict)
    """Each worker's reservation."""
    worker_keys: dict[str, str] = field(default_factory=dict)
    """The config key behind each per-worker resource (scale.cpus_per_worker, ...)."""

    def total(self) -> dict[str, float]:
        out = dict(self.driver)
        for name, amount in self.per_worker.items():
            out[name] = out.get(name, 0.0) + amount * self.workers
        return out

    def explain(self, name: str) -> str:
        """`hydra.launcher.entrypoint_num_cpus=1 + scale.num_workers=2 x scale.cpus_per_worker=1`."""
        terms = []
        if self.driver.get(name):
            terms.append(f"{DRIVER_KEYS.get(name, f'hydra.launcher.entrypoint_resources.{name}')}={self.driver[name]:g}")
        if self.per_worker.get(name) and self.workers:
            terms.append(f"scale.num_workers={self.workers} x {self.worker_keys.get(name, name)}={self.per_worker[name]:g}")
        return " + ".join(terms)


def driver_needs(params: dict[str, Any]) -> dict[str, float]:
    need = {"CPU": float(params.get("entrypoint_num_cpus") or 0), "GPU": float(params.get("entrypoint_num_gpus") or 0),
            **{str(k): float(v) for k, v in dict(params.get("entrypoint_resources") or {}).items()}}
    return {k: v for k, v in need.items() if v > 0}


def point_needs(params: dict[str, Any], scale=None) -> Needs:
    """A point's needs from the launcher's params and its own `scale` (a ScaleConfig; None = no workers)."""
    needs = Needs(driver=driver_needs(params))
    if scale is None:
        return needs
    from kopretrain.train.preflight import worker_resources

    per_worker = worker_resources(types.SimpleNamespace(scale=scale))
    keys = {"CPU": "scale.cpus_per_worker", "GPU": "scale.use_gpu"}
    keys.update({k: f"scale.resources_per_worker.{k}" for k in scale.resources_per_worker})
    if scale.accelerator_type:
        keys[f"accelerator_type:{scale.accelerator_type}"] = "scale.accelerator_type"
    if scale.groups:  # one shape for all workers (checked equal across groups)
        extra = {str(k): float(v) for k, v in scale.groups[0].resources_per_worker.items() if float(v) > 0}
        per_worker.update(extra)
        keys.update({k: f"scale.groups[0].resources_per_worker.{k}" for k in extra})
    needs.workers, needs.per_worker, needs.worker_keys = scale.num_workers, per_worker, keys
    return needs


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def shortfall(need: dict[str, float], capacity: dict[str, float], used: dict[str, float] | None = None) -> list[str]:
    """The resources of which `need` does not fit beside `used` in `capacity`."""
    used = used or {}
    return [k for k, v in need.items() if used.get(k, 0.0) + v > float(capacity.get(k, 0.0)) + 1e-9]


def _what(label: str, num: int) -> str:
    return f"#{num} {label}".rstrip() + ":"


def refusal(num: int, label: str, needs: Needs, capacity: dict[str, float]) -> str:
    """'' when the point fits the cluster's total, else why it never can (one line's part)."""
    short = shortfall(needs.total(), capacity)
    parts = [f"{needs.total()[k]:g} {k} ({needs.explain(k)}), the cluster has {float(capacity.get(k, 0.0)):g} {k} in all"
             for k in short]
    return f"{_what(label, num)} needs " + "; ".join(parts) if parts else ""


def fits(needs: Needs, running: list[Needs], capacity: dict[str, float]) -> list[str]:
    """The resources the next point lacks beside the running points' needs ([] = it fits)."""
    used: dict[str, float] = {}
    for other in running:
        used = _add(used, other.total())
    return shortfall(needs.total(), capacity, used)


def waits_line(num: int, needs: Needs, running: list[tuple[int, Needs]], capacity: dict[str, float], short: list[str]) -> str:
    """`#2 waits: needs 3 CPU beside 3 CPU of running #0, #1; the cluster has 4 CPU` (the [sweep] line)."""
    parts = []
    for k in short:
        used = sum(n.total().get(k, 0.0) for _, n in running)
        have = float(capacity.get(k, 0.0))
        parts.append(f"needs {needs.total()[k]:g} {k} beside {used:g} {k} of the running points, the cluster has {have:g}")
    nums = ", ".join(f"#{n}" for n, _ in running)
    return f"#{num} waits: " + "; ".join(parts) + f" (running: {nums}; submitted when they leave room)"


def autoscaler_kind(report: dict | None) -> str | None:
    """From the v1 monitor's autoscaler report (the dashboard's /api/cluster_status, the report that
    `kopretrain.train.preflight.autoscaler` reads from the GCS): "autoscaler v1" when it names node
    types of an autoscaling config, None when every node is a hand-started one (anonymous
    `node_<id>` types), "unknown" without a report (autoscaler v2 writes none). The dashboard
    camel-cases the keys (`activeNodes`, and `node_<id>` as `node<Id>`); both forms are read."""
    from kopretrain.train.preflight import names_autoscaling_node_types

    if not report:
        return "unknown"
    return "autoscaler v1" if names_autoscaling_node_types(report) else None


def read_cluster(client, address: str, wait_s: float = 10.0) -> tuple[dict[str, float], str | None]:
    """The cluster's total resources (its alive nodes) and `autoscaler_kind`, through the dashboard
    with the launcher's own address and token (the state API and /api/cluster_status). A fresh
    head lists its node and its monitor reports within seconds: up to `wait_s` for both."""
    from ray.util.state import list_nodes

    deadline = time.monotonic() + wait_s
    while True:
        capacity: dict[str, float] = {}
        for node in list_nodes(address=address, limit=10000, raise_on_missing_output=False):
            node = node if isinstance(node, dict) else vars(node)
            if node.get("state") == "ALIVE":
                capacity = _add(capacity, {str(k): float(v) for k, v in (node.get("resources_total") or {}).items()})
        response = client._do_request("GET", "/api/cluster_status")
        data = (json.loads(response.text).get("data") or {}) if response.status_code == 200 else {}
        status = data.get("cluster_status") or data.get("clusterStatus") or {}
        report = status.get("autoscaler_report") or status.get("autoscalerReport")
        if (capacity and report) or time.monotonic() >= deadline:
            return capacity, autoscaler_kind(report)
        time.sleep(1.0)


def check_points(points: list[tuple[int, str, Needs]], capacity: dict[str, float], scaler: str | None) -> str:
    """Before anything is submitted: a point that needs more than the cluster has in all is refused
    (LaunchRefused) on a cluster that cannot add nodes; with an autoscaler (or none known) the
    `[sweep]` line saying what they wait for ('' when every point fits)."""
    refused = [line for num, label, needs in points if (line := refusal(num, label, needs, capacity))]
    if not refused:
        return ""
    more = f" (and {len(refused) - 1} more point{'s' if len(refused) > 2 else ''})" if len(refused) > 1 else ""
    if scaler is None:
        raise LaunchRefused(f"{refused[0]}{more}; no autoscaler can add nodes, so its job would wait forever: lower "
                            "them, or add nodes (hydra.launcher.fit_check=false submits anyway)")
    why = "the cluster gives no autoscaler report: autoscaler v2, or none" if scaler == "unknown" else f"its {scaler} adds them"
    return f"{refused[0]}{more}; submitted anyway: it waits for nodes to join ({why})"
