"""Checks of `kopretrain train` settings against what they apply to, on the driver, before Ray
Train starts (a mismatch found later costs a Ray start, a model load, or a hang):

- the packed sequence length against the model's context (`max_position_embeddings`): longer
  rows fail inside the first forward on every worker (learned positions) or train positions
  the model never had (RoPE) with no word about it;
- the workers' resources against a local Ray instance: `scale.use_gpu=true` on a machine
  without GPUs (or more workers x CPUs than the instance has) would leave Ray Train waiting
  for resources forever. CPUs and GPUs are checked before a local instance starts, the rest
  (custom resources, accelerator types) against `ray.cluster_resources()` right after. A joined
  cluster fails the same way unless it can autoscale (`autoscaler()`): then a shortfall is one
  warning line saying what Ray Train waits for, or an error when even the autoscaler's largest
  cluster (node groups x max replicas, where reported) lacks it.
"""

from __future__ import annotations

import json
import os
import re

from kopretrain.config.train import TrainConfig
from kopretrain.errors import UserError


def model_context(name_or_path: str, arch: dict) -> int | None:
    """`max_position_embeddings` of an HF checkpoint or of a from-scratch `arch` (None if the type has none)."""
    from transformers import AutoConfig

    from kopretrain.hub import load_config

    if name_or_path:
        config = load_config(name_or_path)
    else:
        fields = dict(arch)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def check_context(seq_len: int, limit: int | None) -> None:
    """One line when the packed sequences (`seq_len` tokens) are longer than the model's context `limit` (model_context)."""
    if limit is not None and seq_len > limit:
        raise UserError(f"data.tokens_dir: its sequences are {seq_len} tokens, longer than the model's context "
                        f"(max_position_embeddings={limit}); pack with seq_len<={limit} or raise the model's context")


def worker_resources(cfg: TrainConfig) -> dict[str, float]:
    """What Ray Train reserves per worker (as in `train.command.scaling_config`)."""
    s = cfg.scale
    need = {"CPU": float(s.cpus_per_worker), **{k: float(v) for k, v in s.resources_per_worker.items()}}
    if s.use_gpu:
        need.setdefault("GPU", 1.0)
    if s.accelerator_type:
        need[f"accelerator_type:{s.accelerator_type}"] = 0.001  # Ray's marker resource of that GPU type
    return {k: v for k, v in need.items() if v > 0}


def is_local_instance() -> bool:
    """Whether this process runs on a private local Ray instance (started by kopretrain; cannot grow)."""
    import ray

    from kopretrain.ray_session import NO_DASHBOARD_ENV

    return os.environ.get(NO_DASHBOARD_ENV) == ray.get_runtime_context().gcs_address


_ANONYMOUS_NODE_TYPE = re.compile(r"^node_?[0-9a-f]{56}$", re.I)  # a node no autoscaler config describes (camel-cased: node<Id>)


def names_autoscaling_node_types(report: dict) -> bool:
    """Whether the v1 monitor's autoscaler report names node types of an autoscaling config (a
    cluster of hand-started nodes has only anonymous `node_<id>` types). The report as the GCS keeps
    it, or as the dashboard's /api/cluster_status gives it: camel-cased keys (`activeNodes`, and
    `node_<id>` as `node<Id>`); both forms are read."""
    names = [("active_nodes", "activeNodes"), ("idle_nodes", "idleNodes"), ("pending_launches", "pendingLaunches")]
    types = {str(t) for pair in names for t in (report.get(pair[0]) or report.get(pair[1]) or {})}
    types |= {str(t) for t in (report.get("node_type_mapping") or report.get("nodeTypeMapping") or {}).values()}
    return any(not _ANONYMOUS_NODE_TYPE.match(t) for t in types)


def autoscaler() -> dict | None:
    """Whether the joined Ray cluster can add nodes: {"kind": ..., "max": {resource: most} | None}, or None.

    Read from the GCS as Ray 2.60 keeps it: a cluster config with node groups (what Ray Train's own
    worker-group check reads: `max` = node groups x max replicas), the autoscaler v2 flag (KubeRay
    `autoscalerOptions.version: v2`), or the v1 monitor's status naming node types from an
    autoscaling config (a cluster of hand-started nodes has only anonymous `node_<id>` types).
    """
    import ray
    from ray._private import ray_constants
    from ray._private.state import state
    from ray.experimental.internal_kv import _internal_kv_get

    most = state.get_max_resources_from_cluster_config()
    if most:
        return {"kind": "cluster config", "max": {k: float(v) for k, v in most.items()}}
    namespace = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    if _internal_kv_get(ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY, namespace=namespace) == b"1":
        return {"kind": "autoscaler v2", "max": None}
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    report = (json.loads(status) if status else {}).get("autoscaler_report") or {}
    if names_autoscaling_node_types(report):
        return {"kind": "autoscaler v1", "max": None}
    return None


def check_resources(cfg: TrainConfig, available: dict[str, float], local: bool, only=None, scaler: dict | None = None) -> None:
    """Every worker's resources must exist now, unless a joined cluster can autoscale (`scaler`, from
    `autoscaler()`): then a shortfall is one warning line, or an error past the autoscaler's maximum.
    `only`: check just these resource names."""
    n = cfg.scale.num_workers
    for name, amount in worker_resources(cfg).items():
        have = float(available.get(name, 0.0))
        if (only is not None and name not in only) or have + 1e-9 >= amount * n:
            continue
        if name.startswith("accelerator_type:"):
            what = f"scale.accelerator_type: the workers need {name.split(':', 1)[1]} GPUs"
        elif name in ("CPU", "GPU"):
            what = f"scale: {n} workers need {amount * n:g} {name} in all"
        else:
            what = f"scale.resources_per_worker: {n} workers need {amount * n:g} {name} in all"
        most = (scaler or {}).get("max")
        if scaler is not None and most is not None and float(most.get(name, 0.0)) + 1e-9 < amount * n:
            raise UserError(f"{what}, the Ray cluster has {have:g} and at most {float(most.get(name, 0.0)):g} "
                            f"when its autoscaler has started every node it may (Ray Train would wait forever)")
        if scaler is not None:
            from kopretrain.tracking import warn

            warn(f"{what}, the Ray cluster has {have:g} now; waiting for its autoscaler ({scaler['kind']}) "
                 f"to add nodes with {name} (Ray Train starts when they join)")
            continue
        if not local:
            raise UserError(f"{what}, the Ray cluster has {have:g} and no autoscaler to add nodes (Ray Train would "
                            f"wait forever); lower scale.*, or add nodes that provide {name}")
        fix = {"GPU": "set scale.use_gpu=false, or join a cluster with GPUs (ray.address=...)",
               "CPU": "lower scale.num_workers or scale.cpus_per_worker, or raise ray.num_cpus"}.get(
            name, "join a cluster that has them (ray.address=...)")
        raise UserError(f"{what}, the local Ray instance has {have:g} (Ray Train would wait forever); {fix}")


def check_cluster(cfg: TrainConfig) -> None:
    """Right after Ray starts or is joined: the workers' resources against the instance or cluster."""
    import ray

    local = is_local_instance()
    check_resources(cfg, ray.cluster_resources(), local, scaler=None if local else autoscaler())


def check_resources_before_start(cfg: TrainConfig) -> None:
    """When a private local instance is about to start, its CPUs and GPUs are known before it
    starts (ray.num_cpus or the default; the GPUs torch sees): fail in seconds, not after a Ray start."""
    import ray
    import torch

    from kopretrain.ray_session import default_local_cpus

    if ray.is_initialized() or cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    available = {"CPU": float(cfg.ray.num_cpus or default_local_cpus()), "GPU": float(torch.cuda.device_count())}
    check_resources(cfg, available, local=True, only=("CPU", "GPU"))
