"""Peak host memory of each worker while it loads and shards a pretrained checkpoint: the code
before sharded loading (every rank: `build_model` = the whole fp32 model, then `strategy.wrap`)
against `Strategy.build` (kopretrain/train/model_init.py), side by side in one run.

    .venv/bin/python bench/train_load_memory.py --before /tmp/before [--after .] [--workers 4]
        [--strategies fsdp,deepspeed_zero3] [--layers 18] [--json]

`--before` is a checkout of the commit before sharded loading (`git worktree add /tmp/before
<sha>`); `--after` the tree to measure (default: this one). Model: a Llama of hidden 1536, MLP
4096, 12 heads, `--layers` 18 (~0.51B parameters, 2.06 GB in fp32) over the first 1,500 pieces of
the smoke SentencePiece model, saved in bf16 as sharded safetensors (`max_shard_size` 300MB),
then continued with the smoke tokenizer (2,000 tokens: resized to 2,048 rows, new rows
initialised), as `kopretrain train` does. Each (tree, strategy) runs `--workers` fresh CPU
processes on one gloo process group (the same calls a Ray Train worker makes; Ray itself is left
out to keep the figures to the loader), one torch thread each, one run after the other.

Per worker: `idle` = RSS after imports, config and process group (and DeepSpeed's
`init_distributed`, which both paths call), just before loading; `peak` =
`ru_maxrss` (the process's peak RSS; file pages of the mmapped safetensors count while mapped);
`held` = RSS after loading (gc'd). The figure of merit is the sum over workers of (peak - idle),
against the full fp32 model size. The old ZeRO-3 path shards only in `deepspeed.initialize`; its
figure stops at `wrap` (its peak, the whole model per rank, is already there).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TOKENIZER = ROOT / "data/smoke/tokenizer"
NUM_BASE_TOKENS = 1500
GB = 1e9


def make_model(out: Path, layers: int, hidden: int = 1536, intermediate: int = 4096) -> int:
    """The bf16 sharded-safetensors base model (heads of 128, or one) and its 1,500-token tokenizer
    in `out`; returns the parameter count. Also bench/lora_load_memory.py's model."""
    import torch
    from sentencepiece import sentencepiece_model_pb2
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((SMOKE_TOKENIZER / "tokenizer.model").read_bytes())
    del proto.pieces[NUM_BASE_TOKENS:]
    (out / "spm").mkdir(parents=True, exist_ok=True)
    (out / "spm" / "tokenizer.model").write_bytes(proto.SerializeToString())
    tok = LlamaTokenizer.from_pretrained(str(out / "spm"))
    heads = hidden // 128 or 1
    cfg = LlamaConfig(vocab_size=NUM_BASE_TOKENS, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # no fp32 copy of the model on the way
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(out / "base", max_shard_size="300MB")
    tok.save_pretrained(out / "base")
    return sum(p.numel() for p in model.parameters())


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def worker(args) -> None:
    """One rank: plan, process group, then load (old or new path); writes its figures as JSON."""
    import gc

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    from kopretrain.cli import compose_typed
    from kopretrain.train.model import plan_model
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import StrategySettings

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    cfg = compose_typed("train", ["experiment=smoke", "tracking.enabled=false", "model=pretrained",
                                  f"model.name_or_path={args.model}", f"tokenizer={SMOKE_TOKENIZER}",
                                  "model.gradient_checkpointing=false", f"strategy={args.strategy}"])
    plan = plan_model(cfg)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    if args.strategy.startswith("deepspeed"):  # DeepSpeed's own setup (imports, comm ops): both paths do it first
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    strategy = strategy_class(args.strategy)(StrategySettings(device=torch.device("cpu"), rank=rank, world_size=world))
    dist.barrier()
    idle = rss()
    start = time.perf_counter()
    if hasattr(strategy, "build"):
        strategy.build(plan, cfg.seed)
    else:  # the code before sharded loading
        from kopretrain.train.model import build_model

        model, _ = build_model(plan, cfg.seed)
        strategy.wrap(model)
        del model
    dist.barrier()
    seconds = time.perf_counter() - start
    gc.collect()
    held = rss()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(args.result).write_text(json.dumps({"rank": rank, "idle": idle, "peak": peak, "held": held, "seconds": seconds}))
    dist.destroy_process_group()


def run_group(tree: Path, strategy: str, model: Path, workers: int, tmp: Path, port: int) -> list[dict]:
    procs, results = [], []
    for rank in range(workers):
        result = tmp / f"{strategy}-{port}-{rank}.json"
        env = {**os.environ, "PYTHONPATH": str(tree), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(workers),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--strategy", strategy, "--model", str(model),
               "--result", str(result)]
        procs.append(subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        results.append(result)
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{tree} {strategy}: a worker failed:\n{err[-3000:]}")
    return [json.loads(r.read_text()) for r in results]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path)
    ap.add_argument("--after", type=Path, default=ROOT)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--strategies", default="fsdp,deepspeed_zero3")
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/kopretrain-load-memory"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--strategy")
    ap.add_argument("--model")
    ap.add_argument("--result")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    args.tmp.mkdir(parents=True, exist_ok=True)
    info = args.tmp / f"model-{args.layers}.json"
    if not info.exists():  # in a subprocess: its memory is gone before the workers start
        code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.train_load_memory import make_model; from pathlib import Path; " \
               f"print(make_model(Path({str(args.tmp / f'm{args.layers}')!r}), {args.layers}))"
        n = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()[-1])
        info.write_text(json.dumps({"num_params": n}))
    n = json.loads(info.read_text())["num_params"]
    model = args.tmp / f"m{args.layers}" / "base"
    fp32 = 4 * n
    trees = [("before", args.before), ("after", args.after)] if args.before else [("after", args.after)]
    rows, port = [], 29650
    for strategy in args.strategies.split(","):
        for label, tree in trees:
            port += 1
            ranks = run_group(tree.resolve(), strategy, model, args.workers, args.tmp, port)
            above = sum(r["peak"] - r["idle"] for r in ranks)
            rows.append({"strategy": strategy, "code": label, "ranks": ranks, "sum_peak_above_idle": above,
                         "ratio_to_fp32_model": above / fp32, "max_seconds": max(r["seconds"] for r in ranks)})
    if args.json:
        print(json.dumps({"num_params": n, "fp32_bytes": fp32, "rows": rows}, indent=1))
        return
    print(f"Llama, {n / 1e9:.2f}B parameters ({fp32 / GB:.2f} GB fp32; bf16 sharded safetensors), resized 1,500 -> 2,048 rows; "
          f"{args.workers} CPU workers (gloo, 1 thread); {platform.machine()}, {os.cpu_count()} cores")
    print()
    print("| strategy | code | peak above idle per worker (GB) | sum (GB) | sum / fp32 model | held after (GB, sum above idle) | load s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        per = ", ".join(f"{(x['peak'] - x['idle']) / GB:.2f}" for x in r["ranks"])
        held = sum(x["held"] - x["idle"] for x in r["ranks"]) / GB
        print(f"| {r['strategy']} | {r['code']} | {per} | {r['sum_peak_above_idle'] / GB:.2f} | "
              f"{r['ratio_to_fp32_model']:.2f}x | {held:.2f} | {r['max_seconds']:.1f} |")


if __name__ == "__main__":
    main()
