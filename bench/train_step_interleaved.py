"""The training step alone, `train_step` against a bare PyTorch step, interleaved step by step in the
same two FSDP2 processes, with an A/A control: what the loop itself costs, without Ray or hooks.

    .venv/bin/torchrun --nproc-per-node 2 bench/train_step_interleaved.py [--num-steps 60]

`bench/train_overhead.py` times whole `kopretrain train` runs against a bare loop in separate runs
(Ray Train workers, tracking, hooks): the number a user sees, but on a shared 2-core VM two runs
minutes apart differ by a few percent. Here both steps run in the same processes on alternate
iterations, so machine load hits both alike: A is the bare step (HF's own loss over full logits,
`loss / micro-batches`, one all-reduce of the loss, `clip_grad_norm_`, AdamW), B is either the
same bare step on a second copy of the model (`--b bare`: the A/A control; B pays for running
second) or kopretrain's `train_step` (`--b train`: chunked token-weighted loss, per-domain sums,
the strategy's clip and step, one all-reduce and one host read). The same model shape, data and
micro-batches as `bench/train_overhead.py`: a 4-layer Llama (hidden 256), 16 sequences of 128
tokens per step, micro-batch 4, 2 ranks, gloo, 1 thread each.

Prints, per variant, the median step times and B / A; the loop's own cost is the `train` ratio
divided by the `bare` (A/A) ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = dict(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256)
SEQUENCES, MICRO = 16, 4
SKIP = 5


def run(variant: str, num_steps: int) -> tuple[float, float]:
    """Median step seconds of A (bare) and B (`variant`) on this rank."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    from kopretrain.data.packed import PackedDataset
    from kopretrain.train.loop import micro_batches, train_step
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import RowFreeze, StrategySettings

    rank, world = dist.get_rank(), dist.get_world_size()
    datasets = {d: PackedDataset(ROOT / "data/smoke/tokens" / d) for d in ("en", "ko")}

    def model():
        torch.manual_seed(0)
        return LlamaForCausalLM(LlamaConfig(**SHAPE))

    def sharded(m):
        for layer in m.model.layers:
            fully_shard(layer)
        fully_shard(m)
        return m

    bare = sharded(model())
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=1e-3, weight_decay=0.0, foreach=False)
    settings = StrategySettings(device=torch.device("cpu"), rank=rank, world_size=world,
                                num_accumulation_steps=SEQUENCES // world // MICRO, micro_batch_size=MICRO, max_grad_norm=1.0)
    strategy = strategy_class("fsdp")(settings)
    strategy.wrap(model())
    strategy.start_stage([{"params": list(strategy.module.parameters()), "weight_decay": 0.0}], RowFreeze())
    other = strategy.module if variant == "bare" else None

    def bare_step(m, opt, rows):
        total = torch.zeros(())
        chunks = [torch.from_numpy(rows[i : i + MICRO]) for i in range(0, len(rows), MICRO)]
        for k, x in enumerate(chunks):
            m.set_requires_gradient_sync(k == len(chunks) - 1)
            loss = m(input_ids=x, labels=x).loss
            (loss / len(chunks)).backward()
            total += loss.detach()
        dist.all_reduce(total)
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=False)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(total)

    rng = np.random.default_rng(0)
    a_times, b_times = [], []
    for _ in range(num_steps):
        drawn = [("ko" if i % 2 else "en", 0) for i in range(SEQUENCES)]
        drawn = [(d, int(rng.integers(0, len(datasets[d])))) for d, _ in drawn]
        mine = drawn[rank * (SEQUENCES // world) : (rank + 1) * (SEQUENCES // world)]
        rows = np.stack([datasets[d][j] for d, j in mine]).astype(np.int64)
        started = time.perf_counter()
        bare_step(bare, bare_opt, rows)
        a_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        if other is not None:
            bare_step(other, strategy.optimizer, rows)
        else:
            batches = micro_batches(mine, datasets, MICRO, torch.device("cpu"), ["en", "ko"])
            train_step(strategy, batches, 1e-3, sum(datasets[d].seq_len - 1 for d, _ in drawn))
        b_times.append(time.perf_counter() - started)
    return statistics.median(a_times[SKIP:]), statistics.median(b_times[SKIP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-steps", type=int, default=60)
    parser.add_argument("--variants", default="bare,train", help="B variants, in this order: bare (A/A control), train")
    args = parser.parse_args()

    import os
    import platform

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    ratios = {}
    for variant in args.variants.split(","):
        a, b = run(variant, args.num_steps)
        ratios[variant] = b / a
        if dist.get_rank() == 0:
            print(f"B={variant}: A (bare) {a:.4f} s, B {b:.4f} s, B / A = {b / a:.3f}", flush=True)
    if dist.get_rank() == 0:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
              f"{dist.get_world_size()} ranks, {args.num_steps} steps (first {SKIP} left out)")
        if "bare" in ratios and "train" in ratios:
            print(f"train_step / bare step, A/A-corrected: {ratios['train'] / ratios['bare']:.3f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
