"""Flops, wall time, GPU-hours and cost of a run; the projection from a measured `train` report.

    time = flops_per_token x num_tokens / (num_gpus x peak FLOP/s x MFU)
    flops_per_token = 6N + 12 x layers x q_dim x seq_len                  (PaLM, appendix B)

N counts the parameters without the embedding matrices (input embedding and lm_head), and the
attention score/value matmuls are the second term: the function `train` measures its MFU with
(kopretrain/train/throughput.py), so a measured MFU carries over to the plan unchanged.
LoRA: 4N + 6T + the attention term (forward 2N, backward's input gradients 2N; no weight
gradients of the frozen base; T trainable parameters).
"""

from __future__ import annotations

import json
import os

from kopretrain.errors import UserError
from kopretrain.plan.model_size import ModelSize
from kopretrain.train import throughput

REPORT_KEYS = ("tokens_per_second", "mfu", "num_params", "num_workers", "device")


def flops_per_token(size: ModelSize, seq_len: int, strategy: str = "", trainable: int = 0) -> float:
    """Training FLOPs per token: 6N + attention (4N + 6T + attention for lora), N = non_embedding_params."""
    shape = throughput.shape_of_size(size)
    return throughput.flops_per_token(shape, seq_len, trainable if strategy == "lora" else None)


def attention_flops_per_token(size: ModelSize, seq_len: int) -> float:
    """The attention matmuls' training FLOPs per token (12 x layers x q_dim x seq, non-causal count)."""
    return throughput.attention_flops_per_token(throughput.shape_of_size(size), seq_len)


def timing(flops_token: float, num_tokens: float, num_gpus: int, peak_flops: float, mfu: float,
           price_per_gpu_hour: float) -> dict:
    """wall_seconds, wall_days, gpu_hours and cost (None without a price)."""
    seconds = flops_token * num_tokens / (num_gpus * peak_flops * mfu)
    gpu_hours = seconds * num_gpus / 3600
    return {"wall_seconds": seconds, "wall_days": seconds / 86400, "gpu_hours": gpu_hours,
            "cost": gpu_hours * price_per_gpu_hour if price_per_gpu_hour else None}


def read_train_report(path: str) -> dict:
    """The measured part of a `train` report.json (a file or its run directory)."""
    file = os.path.join(path, "report.json") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8") as f:
            report = json.load(f)
    except OSError:
        raise UserError(f"from_report: cannot read {file!r} (a train run's report.json or its run directory)") from None
    except ValueError as exc:
        raise UserError(f"from_report: {file} is not JSON ({exc})") from None
    missing = [k for k in REPORT_KEYS if not isinstance(report, dict) or k not in report]
    if missing:
        raise UserError(f"from_report: {file} is not a train report (no {', '.join(missing)})")
    if not report["tokens_per_second"] or not report["num_params"] or not report["num_workers"]:
        raise UserError(f"from_report: {file} measured no throughput (tokens_per_second, num_params or num_workers is 0)")
    return {k: report[k] for k in REPORT_KEYS} | {"path": os.path.abspath(file)}


def project_measured(measured: dict, size: ModelSize, num_tokens: float, num_gpus: int) -> dict:
    """The run's time at the measured throughput: tokens/s per worker, times num_gpus, scaled by
    the ratio of 6N (measured model / planned model). Exact for the same model, GPU type and
    strategy; a rough scaling otherwise (the report's device is in `measured`)."""
    per_gpu = measured["tokens_per_second"] / measured["num_workers"]
    tokens_per_second = per_gpu * num_gpus * measured["num_params"] / size.total_params
    seconds = num_tokens / tokens_per_second
    return {"projected_tokens_per_second": tokens_per_second, "projected_wall_seconds": seconds,
            "projected_wall_days": seconds / 86400, "projected_gpu_hours": seconds * num_gpus / 3600}
