"""Minor page faults per training step under glibc's malloc settings after a sharded load.

    .venv/bin/python bench/host_page_faults.py

`kopretrain.train.host_memory.compact_host_memory` lowers glibc's mmap threshold while a checkpoint
loads and afterwards sets it to 32 MiB. Setting it turns glibc's dynamic thresholds off, so the
trim threshold would stay at its static 128 KiB: heap memory freed at the end of a step is handed
back to the OS and faulted in again in the next one. Each setting runs in its own process (malloc
settings are per process): `dynamic` (glibc's default), `fixed` (mmap threshold 32 MiB only: the
code before the fix), `fixed_trim` (also the trim threshold at 64 MiB: what compact_host_memory
now leaves). A 4-layer Llama (hidden 256, vocab 2,048), 2 micro-batches of 4 x 128 tokens and an
AdamW step per step, 1 thread; page faults are counted by the kernel (getrusage), so the figure
does not depend on machine load; the step times printed beside them do.
"""

from __future__ import annotations

import subprocess
import sys

STEPS, SKIP = 40, 5


def one(mode: str) -> None:
    import ctypes
    import resource
    import statistics
    import time

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    libc = ctypes.CDLL("libc.so.6")
    if mode in ("fixed", "fixed_trim"):
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
    if mode == "fixed_trim":
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    x = torch.randint(0, 2048, (4, 128))
    times, faults = [], 0
    for step in range(STEPS):
        started = time.perf_counter()
        for _ in range(2):
            model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        if step == SKIP - 1:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (STEPS - SKIP)
    print(f"| {mode} | {per_step:.0f} | {statistics.median(times[SKIP:]):.3f} |", flush=True)


def main() -> None:
    if len(sys.argv) > 1:
        one(sys.argv[1])
        return
    print("| malloc setting | minor page faults per step | median step s |\n|---|---|---|", flush=True)
    for mode in ("dynamic", "fixed", "fixed_trim"):
        subprocess.run([sys.executable, __file__, mode], check=True)


if __name__ == "__main__":
    main()
