"""What `kopretrain train` costs over a bare PyTorch loop: step time side by side, interleaved, in one run.

    .venv/bin/python bench/train_overhead.py [--repeats 5] [--num-steps 60] [--modes local,fsdp] [--out bench/train_overhead.md]

Two modes: `local` (strategy=local, one Ray Train CPU worker) and `fsdp` (FSDP2 on 2 Ray Train CPU
workers, gloo). The baseline of each is a bare PyTorch loop in as many Ray Train workers (Ray
Train only starts the processes and the gloo group; `fully_shard` per decoder layer for fsdp): the same model (same seed and
weights), batches drawn from the same packed data by kopretrain's sampler (read into memory
before the clock starts), the same micro-batches, gradient accumulation, AdamW (foreach=False), clipping and
one thread per process (Ray gives each 1-CPU worker OMP_NUM_THREADS=1) and learning-rate schedule
(so the final losses agree). It reads the loss once per step, as any loop that prints it must. `train` runs as a user runs it: MLflow tracking on (a
SQLite store), a step line every `log_every_num_steps`, checkpoints only at the end. The one
difference in the math: the bare loop takes the model's own loss (`model(input_ids, labels=...)`,
Hugging Face's cross-entropy over the full logits), `train` its chunked cross-entropy
(kopretrain/train/loss.py); the final losses agree (printed side by side).

Step time: the median wall time per optimizer step over the run, the first 3 steps left out
(bare) / checkpoints left out (train: report.json's `step_seconds`, measured between steps on rank 0,
hooks included). Baseline and train alternate `--repeats` times, the baseline first in odd repeats and
`train` first in even ones (so neither always runs on a warmer or cooler machine); the table gives
each pair's ratio and their median. Quote the median ratio and say whether the machine was shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARCH = ["model.arch.hidden_size=256", "model.arch.intermediate_size=688", "model.arch.num_hidden_layers=4",
        "model.arch.num_attention_heads=4", "model.arch.num_key_value_heads=2"]
BATCH = ["batch.num_sequences_per_step=16", "batch.micro_batch_size=4"]
SKIP = 3  # warm-up steps the bare loop leaves out


def config(mode: str, num_steps: int, tmp: Path):
    from kopretrain.cli import compose_typed

    scale = ["strategy.name=local", "scale.num_workers=1"] if mode == "local" else ["strategy=fsdp", "scale.num_workers=2"]
    from kopretrain.paths import resolve_config_paths

    cfg = compose_typed("train", ["experiment=smoke", *scale, f"num_steps={num_steps}", "checkpoint.every_num_steps=0",
                                  f"tracking.uri=sqlite:///{tmp}/mlflow.db", *ARCH, *BATCH])
    return resolve_config_paths("train", cfg)  # absolute: the Ray workers of the bare loop run elsewhere


def bare_worker(rank: int, world_size: int, cfg, out: dict) -> None:
    """A bare PyTorch loop on this rank's share of the same batches; writes its step times to `out`."""
    import torch
    import torch.distributed as dist

    import numpy as np

    from kopretrain.data.packed import PackedDataset
    from kopretrain.train.mix_schedule import build_mix_schedule
    from kopretrain.train.mixing import MixingSampler
    from kopretrain.train.model import build_model, plan_model
    from kopretrain.train.schedule import lr_at

    torch.set_num_threads(1)
    weights = cfg.mix.resolved_weights()
    datasets = {d: PackedDataset(Path(cfg.data.tokens_dir) / d) for d in weights}
    schedule = build_mix_schedule(cfg.mix, [(s.name, s.num_steps) for s in cfg.resolved_stages()])
    sampler = MixingSampler({d: len(ds) for d, ds in datasets.items()}, schedule, cfg.seed,
                            seq_lens={d: ds.seq_len for d, ds in datasets.items()})
    per_rank, micro = cfg.batch.num_sequences_per_step // world_size, cfg.batch.micro_batch_size
    steps = []  # every step's micro-batches, read into memory before the clock starts
    for _ in range(cfg.num_steps):
        mine = sampler.next_batch(cfg.batch.num_sequences_per_step)[rank * per_rank : (rank + 1) * per_rank]
        rows = np.stack([datasets[d][j] for d, j in mine]).astype(np.int64)
        steps.append([torch.from_numpy(rows[i : i + micro]) for i in range(0, per_rank, micro)])
    model, _ = build_model(plan_model(cfg), cfg.seed)
    if world_size > 1:
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if type(module).__name__ in set(model._no_split_modules):
                fully_shard(module)
        fully_shard(model)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps, foreach=False)
    times, losses = [], []
    o = cfg.optim
    for step, batches in enumerate(steps):
        started = time.perf_counter()
        for group in opt.param_groups:  # the same schedule, so the final losses can be compared
            group["lr"] = lr_at(step, num_steps=cfg.num_steps, peak_lr=o.lr, warmup_steps=o.lr_warmup_steps,
                                schedule=o.lr_schedule, min_ratio=o.lr_min_ratio)
        total = torch.zeros(())
        for k, input_ids in enumerate(batches):
            if world_size > 1:
                model.set_requires_gradient_sync(k == len(batches) - 1)
            loss = model(input_ids=input_ids, labels=input_ids).loss
            (loss / len(batches)).backward()
            total += loss.detach()
        if world_size > 1:
            dist.all_reduce(total)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm, foreach=False)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(total) / len(batches) / world_size)  # one host sync per step
        times.append(time.perf_counter() - started)
    if rank == 0:
        out["threads"] = torch.get_num_threads()
        out["step_seconds"] = statistics.median(times[SKIP:])
        out["final_loss"] = losses[-1]


def _bare_train_fn(config: dict):
    import ray.train

    ctx = ray.train.get_context()
    out: dict = {}
    bare_worker(ctx.get_world_rank(), ctx.get_world_size(), config["cfg"], out)
    return out or None


def run_bare(mode: str, cfg, storage: Path) -> dict:
    """The bare loop in the same kind of process as `train`'s workers: Ray Train workers with 1 CPU
    (OMP_NUM_THREADS=1, Ray's worker niceness) and a gloo group; Ray Train only starts them, the
    loop is plain torch."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from kopretrain.config.common import RayConfig
    from kopretrain.ray_session import init_ray, shutdown_ray

    init_ray(RayConfig(num_cpus=8))
    try:
        trainer = TorchTrainer(_bare_train_fn, train_loop_config={"cfg": cfg},
                               scaling_config=ray.train.ScalingConfig(num_workers=1 if mode == "local" else 2,
                                                                      resources_per_worker={"CPU": 1}),
                               run_config=ray.train.RunConfig(storage_path=str(storage)))
        return trainer.fit().return_value
    finally:
        shutdown_ray()


def run_kopretrain(mode: str, cfg, run_dir: Path) -> dict:
    """`run_train` on a fresh local Ray instance (one per run: a local run followed by an fsdp one on
    the same instance once stalled at the worker group's start on the shared 2-core VM)."""
    from kopretrain.config.common import RayConfig
    from kopretrain.ray_session import init_ray, shutdown_ray
    from kopretrain.train.command import run_train

    init_ray(RayConfig(num_cpus=8))
    try:
        report = run_train(cfg, run_dir)
    finally:
        shutdown_ray()
    return {"step_seconds": report["step_seconds"], "final_loss": report["final_loss"]}


def table(rows: list[dict], args, load: tuple) -> str:
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}; "
             f"load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"
             + (" (shared with other processes)" if max(load) > 1.5 else ""),
             f"{args.num_steps} steps of 16 sequences x 128 tokens, micro-batch 4, model {' '.join(a.split('.')[-1] for a in ARCH)}; "
             "1 thread per process", "",
             "| mode | repeat | bare step s | train step s | train / bare |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['repeat']} | {r['bare']:.4f} | {r['train']:.4f} | {r['train'] / r['bare']:.3f} |")
    lines.append("")
    for mode in dict.fromkeys(r["mode"] for r in rows):
        ratios = [r["train"] / r["bare"] for r in rows if r["mode"] == mode]
        lines.append(f"{mode}: median train / bare = {statistics.median(ratios):.3f} over {len(ratios)} repeats "
                     f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-steps", type=int, default=60)
    parser.add_argument("--modes", default="local,fsdp")
    parser.add_argument("--out", default="", help="also write the table to this markdown file")
    args = parser.parse_args()
    os.environ.pop("RAY_ADDRESS", None)
    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="kopretrain-overhead-") as tmp:
        for repeat in range(1, args.repeats + 1):
            for mode in args.modes.split(","):
                cfg = config(mode, args.num_steps, Path(tmp))
                if repeat % 2:  # odd repeats run the baseline first, even ones `train` first: no order effect
                    bare = run_bare(mode, cfg, Path(tmp) / f"bare-{mode}-{repeat}")
                    mine = run_kopretrain(mode, cfg, Path(tmp) / f"{mode}-{repeat}")
                else:
                    mine = run_kopretrain(mode, cfg, Path(tmp) / f"{mode}-{repeat}")
                    bare = run_bare(mode, cfg, Path(tmp) / f"bare-{mode}-{repeat}")
                rows.append({"mode": mode, "repeat": repeat, "bare": bare["step_seconds"], "train": mine["step_seconds"],
                             "loss": (bare["final_loss"], mine["final_loss"])})
                print(f"{mode} repeat {repeat}: bare {bare['step_seconds']:.4f} s, train {mine['step_seconds']:.4f} s, "
                      f"final loss bare {bare['final_loss']:.4f} train {mine['final_loss']:.4f}", flush=True)
    text = table(rows, args, (load_start, os.getloadavg()[0]))
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
