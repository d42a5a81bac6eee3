"""Training throughput per strategy, side by side in one run, as ratios to DDP.

    .venv/bin/python bench/train_strategies.py [--num-steps 20] [--strategies ddp,fsdp,deepspeed_zero2,deepspeed_zero3]

Every strategy trains the same model on the same batches (the smoke data, Korean with 20%
English replay, 2 Ray Train CPU workers with gloo, one after another on one local Ray
instance) and the script prints, per strategy: tokens/s measured inside the training steps
(no startup, no checkpoints; what `report.json` calls tokens_per_second), the wall time of the
whole fit (Ray worker start, model build, checkpoints, export), the final loss (the same
math: they should agree), and tokens/s as a ratio to DDP, the unsharded baseline. On CPU
this measures the strategies' overhead (sharding, all-gathers, ZeRO bookkeeping), not what
they buy on GPUs (memory); say which machine the figures come from when quoting them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARCH = ["model.arch.hidden_size=128", "model.arch.intermediate_size=384", "model.arch.num_hidden_layers=4",
        "model.arch.num_attention_heads=4", "model.arch.num_key_value_heads=2"]


def main() -> None:
    from kopretrain.cli import compose_typed
    from kopretrain.config.common import RayConfig
    from kopretrain.ray_session import init_ray, shutdown_ray
    from kopretrain.train.command import run_train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=20)
    parser.add_argument("--strategies", default="ddp,fsdp,deepspeed_zero2,deepspeed_zero3")
    args = parser.parse_args()
    os.environ.pop("RAY_ADDRESS", None)
    init_ray(RayConfig(num_cpus=8))
    rows = []
    with tempfile.TemporaryDirectory(prefix="kopretrain-bench-") as tmp:
        for strategy in args.strategies.split(","):
            cfg = compose_typed("train", ["experiment=smoke", f"strategy={strategy}", f"num_steps={args.num_steps}",
                                          "checkpoint.every_num_steps=0", "tracking.enabled=false",
                                          "batch.num_sequences_per_step=16", "batch.micro_batch_size=4", *ARCH])
            started = time.perf_counter()
            report = run_train(cfg, Path(tmp) / strategy)
            rows.append((strategy, report["tokens_per_second"], time.perf_counter() - started, report["final_loss"],
                         report["num_params"]))
    shutdown_ray()
    base = dict((r[0], r[1]) for r in rows).get("ddp", rows[0][1])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}; 2 Ray Train CPU workers (gloo); "
          f"{rows[0][4]:,} parameters, {args.num_steps} steps of 16 x 128 tokens")
    print(f"{'strategy':<17} {'tokens/s':>9} {'vs ddp':>7} {'fit wall s':>10} {'final loss':>11}")
    for strategy, tps, wall, loss, _ in rows:
        print(f"{strategy:<17} {tps:>9.0f} {tps / base:>7.2f} {wall:>10.1f} {loss:>11.5f}")


if __name__ == "__main__":
    main()
