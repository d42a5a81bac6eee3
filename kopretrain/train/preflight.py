"""Checks of `kopretrain train` settings against what they apply to, on the driver, before Ray
Train starts (a mismatch found later costs a Ray start, a model load, or a hang):

- the packed sequence length against the model's context (`max_position_embeddings`): longer
  rows fail inside the first forward on every worker (learned positions) or train positions
  the model never had (RoPE) with no word about it;
- the workers' resources against a local Ray instance: `scale.use_gpu=true` on a machine
  without GPUs (or more workers x CPUs than the instance has) would leave Ray Train waiting
  for resources forever. CPUs and GPUs are checked before a local instance starts, the rest
  (custom resources, accelerator types) against `ray.cluster_resources()` right after. A joined
  cluster may still grow (an autoscaler adds nodes), so there a shortfall is one warning line.
"""

from __future__ import annotations

import os

from kopretrain.config.train import TrainConfig
from kopretrain.errors import UserError


def model_context(name_or_path: str, arch: dict) -> int | None:
    """`max_position_embeddings` of an HF checkpoint or of a from-scratch `arch` (None if the type has none)."""
    from transformers import AutoConfig

    if name_or_path:
        config = AutoConfig.from_pretrained(name_or_path)
    else:
        fields = dict(arch)
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def check_context(seq_len: int, name_or_path: str, arch: dict) -> None:
    limit = model_context(name_or_path, arch)
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


def check_resources(cfg: TrainConfig, available: dict[str, float], local: bool, only=None) -> None:
    """Every worker's resources must exist on a local instance; on a cluster a shortfall is a warning.
    `only`: check just these resource names."""
    n = cfg.scale.num_workers
    for name, amount in worker_resources(cfg).items():
        have = float(available.get(name, 0.0))
        if (only is not None and name not in only) or have + 1e-9 >= amount * n:
            continue
        if name.startswith("accelerator_type:"):
            what = f"scale.accelerator_type: the workers need {name.split(':', 1)[1]} GPUs"
        else:
            what = f"scale: {n} workers need {amount * n:g} {name} in all"
        if not local:
            from kopretrain.tracking import warn

            warn(f"{what}, the Ray cluster has {have:g} now; Ray Train waits until nodes provide them")
            continue
        fix = {"GPU": "set scale.use_gpu=false, or join a cluster with GPUs (ray.address=...)",
               "CPU": "lower scale.num_workers or scale.cpus_per_worker, or raise ray.num_cpus"}.get(
            name, "join a cluster that has them (ray.address=...)")
        raise UserError(f"{what}, the local Ray instance has {have:g} (Ray Train would wait forever); {fix}")


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
