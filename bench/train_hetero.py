"""One job on two GPU groups (simulated on CPU): tokens/s against each group alone, and rank imbalance.

    .venv/bin/python bench/train_hetero.py [--num-steps 20]

Starts, in a child process with a private HOME and Ray temp dir (tests/train/hetero_cluster.py),
a Ray cluster on this machine whose two worker nodes carry the labels of cluster/raycluster.yaml's
GPU groups (`ray.io/accelerator-type=A100` and `=H100`, 2 logical CPUs each), and trains the same
model on the same batches (DDP, gloo, 16 sequences of 128 tokens per step) three ways:
- `a100 alone`: one worker on the A100-labelled node (micro-batch 4, 4 micro-batches per step);
- `h100 alone`: the same on the H100-labelled node;
- `hetero auto`: one job on both nodes (`scale=hetero_a100_h100` cut to one worker per group,
  `micro_batch_size: auto`: A100 312 and H100 989 TFLOPS give micro-batches 1 and 3, 4 per step).

It prints tokens/s inside the training steps (report.json's tokens_per_second) and, for the
heterogeneous job, the throughput model's view of each rank: step time = accumulation x its
micro-batch time, the step waits for the slowest rank. Each rank's micro-batch time is measured
on its own node (a Ray task pinned there by the same label selector, forward + backward of the
same model at the rank's micro-batch size, the nodes in turns, the minimum of 7 after a warm-up),
so the imbalance is max / min of the ranks' step times, with auto sizes and with equal sizes (2
and 2). The three runs are one after another: on a machine shared with other work their tokens/s
move with its load, so run it on an idle machine and compare the hetero job's loss with the
others' (same batches, same math: the same to about 1e-5).

On CPU both "groups" are the same cores of one machine: no A100 or H100 is involved. The
heterogeneous job here can only show that one job spans both groups and what its overhead is;
sizes by peak TFLOPS (1:3) unbalance equal CPUs on purpose. On real A100 + H100 nodes the same
model predicts balance when the measured speed ratio matches the peak ratio.
"""

from __future__ import annotations

import argparse
import json
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
LABEL = "ray.io/accelerator-type"


def cases(num_steps: int) -> dict[str, list[str]]:
    common = ["strategy=ddp", f"num_steps={num_steps}", "checkpoint.every_num_steps=0",
              "batch.num_sequences_per_step=16", "batch.micro_batch_size=2", *ARCH]
    alone = ["scale.num_workers=1", "batch.micro_batch_size=4", "scale.max_failures=0"]
    hetero = ["scale=hetero_a100_h100", "scale.use_gpu=false", "scale.cpus_per_worker=1", "scale.max_failures=0",
              "scale.groups.0.num_workers=1", "scale.groups.1.num_workers=1"]
    return {
        "a100 alone": [*common, *alone, f"+scale.label_selector={{{LABEL}: A100}}"],
        "h100 alone": [*common, *alone, f"+scale.label_selector={{{LABEL}: H100}}"],
        "hetero auto": [*common, *hetero],
    }


def micro_batch_seconds(overrides: list[str], sizes: dict[str, list[int]], repeats: int = 7) -> dict[str, dict[int, float]]:
    """Forward+backward seconds per micro-batch size on each labelled node ({group: [sizes]}): one actor
    per node (pinned by the group's label selector), measured in turns, the minimum of `repeats`
    (the least disturbed by other load on a shared machine)."""
    import ray

    @ray.remote(num_cpus=1)
    class Timer:
        def __init__(self, overrides: list[str]):
            import torch

            from kopretrain.cli import compose_typed
            from kopretrain.train.model import build_model, plan_model

            torch.set_num_threads(1)
            cfg = compose_typed("train", ["experiment=smoke", "tracking.enabled=false", *overrides])
            self.model, _ = build_model(plan_model(cfg), cfg.seed)

        def time(self, size: int) -> float:
            import torch

            x = torch.randint(0, self.model.config.vocab_size, (size, 128))
            started = time.perf_counter()
            self.model(input_ids=x, labels=x).loss.backward()
            return time.perf_counter() - started

    timers = {g: Timer.options(label_selector={LABEL: g.upper()}).remote(overrides) for g in sizes}
    for g, timer in timers.items():  # warm-up
        ray.get([timer.time.remote(s) for s in sizes[g]])
    best: dict[str, dict[int, float]] = {g: {s: float("inf") for s in sizes[g]} for g in sizes}
    for _ in range(repeats):
        for g, timer in timers.items():
            for s in sizes[g]:
                best[g][s] = min(best[g][s], ray.get(timer.time.remote(s)))
    return best


def child(spec_file: str, out_file: str) -> None:
    """In the private child process: the cluster, the three runs, the per-node timings."""
    import ray

    from tests.train.hetero_cluster import join, run_cases, start_cluster

    spec = json.loads(Path(spec_file).read_text())
    cluster = start_cluster()
    try:
        join(cluster)
        results = run_cases(spec["cases"], Path(spec["work_dir"]))
        groups = results["hetero auto"]["report"]["scale_groups"]
        sizes = {name: sorted({*groups[name]["micro_batch_sizes"], 2}) for name in ("a100", "h100")}
        results["timing"] = micro_batch_seconds(spec["cases"]["hetero auto"], sizes)
    finally:
        ray.shutdown()
        cluster.shutdown()
    Path(out_file).write_text(json.dumps(results, default=str))


def main() -> None:
    import subprocess

    from tests.train.hetero_cluster import private_env

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kr-hb-", dir="/tmp") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"work_dir": tmp, "cases": cases(args.num_steps)}))
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(spec), str(out)], cwd=ROOT,
                              env=private_env(Path(tmp)), text=True, capture_output=True)
        if proc.returncode:
            sys.exit(f"bench failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        results = json.loads(out.read_text())
    wall = time.perf_counter() - started
    reports = {k: v["report"] for k, v in results.items() if k != "timing"}
    het = reports["hetero auto"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()}; simulated cluster: 2 nodes "
          f"labelled A100 / H100 (2 logical CPUs each, the SAME physical cores); DDP over gloo; {het['num_params']:,} "
          f"parameters; {args.num_steps} steps of 16 x {het['seq_len']} tokens; {wall:.0f} s in all")
    print(f"{'job':<12} {'workers':>7} {'micro-batches':>13} {'accum':>5} {'tokens/s':>9} {'vs a100 alone':>13} {'final loss':>10}")
    base = reports["a100 alone"]["tokens_per_second"]
    for name, r in reports.items():
        sizes = "4" if r["scale_groups"] is None else "/".join(
            str(s) for g in ("a100", "h100") for s in r["scale_groups"][g]["micro_batch_sizes"])
        print(f"{name:<12} {r['num_workers']:>7} {sizes:>13} {r['num_accumulation_steps']:>5} "
              f"{r['tokens_per_second']:>9.0f} {r['tokens_per_second'] / base:>13.2f} {r['final_loss']:>10.5f}")
    accum = het["num_accumulation_steps"]
    timing = {g: {int(k): v for k, v in t.items()} for g, t in results["timing"].items()}
    for label, sizes in (("auto (peak TFLOPS)", {g: het["scale_groups"][g]["micro_batch_sizes"][0] for g in timing}),
                         ("equal sizes", {g: 2 for g in timing})):
        step = {g: accum * timing[g][sizes[g]] for g in timing}
        print(f"rank step time, {label}: " + ", ".join(f"{g} ({sizes[g]} seq) {step[g] * 1e3:.0f} ms" for g in step)
              + f"; imbalance max/min {max(step.values()) / min(step.values()):.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
