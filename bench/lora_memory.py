"""Memory and tokens/s of full fine-tuning vs LoRA vs LoRA + the new vocabulary's rows (and the
low-memory options) on a small Llama with an expanded vocabulary, on CPU (or one GPU).

    .venv/bin/python bench/lora_memory.py [--steps 2] [--repeat 2] [--device cpu|cuda] [--variants full,lora,...]

Model: Llama shape, hidden 512, 8 layers, 8 heads, MLP 1376, a 32,000-token base vocabulary
expanded to 46,336 rows (Chinese-LLaMA / EEVE-like: ~14k new Korean tokens), untied lm_head: 72.8M
parameters, 65% of them in the two embedding matrices (so at small scale; at 7B they are 6%).
Each variant runs in a fresh subprocess through kopretrain's own code: `apply_lora`,
`plan_adapter_stage` / `plan_stage` and the `local` strategy's step (its optimizer factory),
micro-batch 2 x 128 tokens, one warmup step, then `--steps` timed steps.

Measured, per variant:
- model states: bytes of parameters + gradients + optimizer state, summed over the tensors after
  the last step (exact; the number `kopretrain plan` models);
- peak RSS (CPU): the subprocess's `ru_maxrss` less its RSS just before the model is built, i.e.
  the peak the training added (model states, activations, allocator caching), not the imports;
  on GPU: `torch.cuda.max_memory_allocated`;
- tokens/s over the timed steps (wall clock, one torch thread; BENCH_THREADS changes it). The
  variants run in `--repeat` interleaved rounds and each keeps its best round (its lowest peak),
  which keeps the ratios honest on a shared machine.
Prints markdown; `--json` for the raw rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

VARIANTS = {
    "full": {"lora": False},
    "full_8bit": {"lora": False, "optimizer": "adamw_8bit"},
    "lora": {"lora": True, "new_rows": False},
    "lora_rows": {"lora": True, "new_rows": True},
    "lora_rows_ckpt": {"lora": True, "new_rows": True, "ckpt": True},
    "lora_rows_8bit": {"lora": True, "new_rows": True, "optimizer": "adamw_8bit"},
}
BASE_VOCAB, NUM_ROWS = 32_000, 46_336


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(name: str, steps: int, device: str) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kopretrain.train.adapters import LoraPlan, TARGET_MODULES, apply_lora, plan_adapter_stage
    from kopretrain.train.stages import embedding_param_names, plan_stage
    from kopretrain.train.strategies.base import StrategySettings
    from kopretrain.train.strategies.local import LocalStrategy

    v = VARIANTS[name]
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    before = rss_bytes()
    config = LlamaConfig(vocab_size=NUM_ROWS, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    num_params = sum(p.numel() for p in model.parameters())
    if v.get("ckpt"):
        model.gradient_checkpointing_enable()
    if v["lora"]:
        rows = list(range(BASE_VOCAB, NUM_ROWS)) if v["new_rows"] else []
        model = apply_lora(model, LoraPlan(r=16, alpha=32, dropout=0.0, target_modules=TARGET_MODULES["llama"], new_rows=rows))
        stage = plan_adapter_stage(model, "all", 0.1)
    else:
        stage = plan_stage(model, "all", embedding_param_names(model), None, 0.1)
    trainable = stage.apply(model)
    dev = torch.device(device)
    strategy = LocalStrategy(StrategySettings(device=dev, micro_batch_size=2, max_grad_norm=1.0,
                                              optimizer=v.get("optimizer", "adamw")))
    strategy.wrap(model)
    strategy.start_stage(stage.param_groups(model), stage.freeze)
    gen = torch.Generator().manual_seed(0)
    batch = [torch.randint(0, NUM_ROWS, (2, 128), generator=gen).to(dev) for _ in range(steps + 1)]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses, started = [], 0.0
    for i, ids in enumerate(batch):
        if i == 1:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        strategy.forward_backward(ids, last=True)
        if i == len(batch) - 1:  # count the gradients while they exist
            grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
        losses.append(float(strategy.step(3e-4)))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if "trainable_tokens_original" in n)
    optim = sum(t.numel() * t.element_size() for s in strategy.optimizer.state.values() for t in s.values()
                if torch.is_tensor(t))
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    return {"variant": name, "device": device, "num_params": num_params, "trainable_params": trainable,
            "params_bytes": params + buffers, "grads_bytes": grads, "optimizer_bytes": optim,
            "model_states_bytes": params + buffers + grads + optim, "peak_bytes": peak,
            "tokens_per_second": steps * 2 * 128 / seconds, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:  # the subprocess
        print(json.dumps(run_variant(args.one, args.steps, args.device)))
        return
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name in args.variants.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--device", args.device],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: failed: {out.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if name in best:
                row["peak_bytes"] = min(row["peak_bytes"], best[name]["peak_bytes"])
                row["tokens_per_second"] = max(row["tokens_per_second"], best[name]["tokens_per_second"])
            best[name] = row
    rows = list(best.values())
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    full = next((r for r in rows if r["variant"] == "full"), rows[0])
    mib = 2**20
    print(f"{platform.processor() or platform.machine()}, {args.device}, {full['num_params'] / 1e6:.1f}M params, "
          f"best of {args.repeat} rounds of {args.steps} timed steps of 2 x 128 tokens\n")
    print("| variant | trainable | params | grads | optimizer | model states | x full | peak | x full | tokens/s | x full |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['trainable_params'] / 1e6:.2f}M | {r['params_bytes'] / mib:.0f} MiB | "
              f"{r['grads_bytes'] / mib:.0f} MiB | {r['optimizer_bytes'] / mib:.0f} MiB | {r['model_states_bytes'] / mib:.0f} MiB | "
              f"{r['model_states_bytes'] / full['model_states_bytes']:.2f} | {r['peak_bytes'] / mib:.0f} MiB | "
              f"{r['peak_bytes'] / full['peak_bytes']:.2f} | {r['tokens_per_second']:.0f} | "
              f"{r['tokens_per_second'] / full['tokens_per_second']:.2f} |")


if __name__ == "__main__":
    main()
